/* End-to-end target linked with libgeom.so: prints every area it computes, so logpoint
 * output inside the library can be compared with the program's own output. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

struct point {
	int x, y;
};

long geom_area(const struct point *a, const struct point *b);

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 50;
	long pause_us = getenv("PAUSE_US") ? atol(getenv("PAUSE_US")) : 0;
	long total = 0;
	for (int i = 0; i < n; i++) {
		struct point a = {i, 2 * i}, b = {3 * i + 1, i % 7};
		long area = geom_area(&a, &b);
		total += area;
		printf("area %d %ld\n", i, area);
		if (pause_us)
			usleep((useconds_t)pause_us);
	}
	printf("total %ld\n", total);
	return 0;
}
