/* End-to-end target: transfers between accounts, one line printed per transfer, so the
 * tests can compare logpoint output with what the program itself prints. Deterministic.
 * Lines marked TAG_* are used by tests/e2e. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct flags {
	unsigned frozen : 1;
	unsigned tier : 3;
};

struct account {
	char name[16];
	long balance;
	struct flags flags;
};

struct txn {
	int id;
	const char *memo;
	struct account *from, *to;
	long amount;
};

long total_moved;
static const char *memos[] = {"rent", "coffee \"to go\"", "refund\n"};

__attribute__((noinline)) static int apply(struct txn *t)
{
	if (t->from->flags.frozen)		/* TAG_APPLY_CHECK */
		return -1;
	t->from->balance -= t->amount;
	t->to->balance += t->amount;
	total_moved += t->amount;		/* TAG_APPLY_MOVED */
	return 0;
}

__attribute__((noinline)) static long depth(int n, long acc)
{
	if (n == 0)
		return acc;			/* TAG_DEPTH_BASE */
	return depth(n - 1, acc + n) + 1;
}

int main(int argc, char **argv)
{
	int rounds = argc > 1 ? atoi(argv[1]) : 200;
	struct account acc[4];
	memset(acc, 0, sizeof(acc));
	for (int i = 0; i < 4; i++) {
		snprintf(acc[i].name, sizeof(acc[i].name), "acct-%c", 'A' + i);
		acc[i].balance = 1000 * (i + 1);
		acc[i].flags.tier = (unsigned)i;
		acc[i].flags.frozen = i == 3;
	}
	for (int i = 0; i < rounds; i++) {
		struct txn t = {i, memos[i % 3], &acc[i % 4], &acc[(i + 1) % 4], (i * 37) % 100 + 1};
		int r = apply(&t);
		printf("txn %d %ld %d\n", t.id, t.amount, r);
	}
	printf("depth %ld\n", depth(5, 0));
	printf("moved %ld balances %ld %ld %ld %ld\n", total_moved, acc[0].balance, acc[1].balance,
	       acc[2].balance, acc[3].balance);
	return 0;
}
