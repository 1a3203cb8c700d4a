/* Condition codes of jcc (Intel SDM vol. 2, "Jcc", table of condition codes).
 * Reachable from the trap handler: pure computation, no calls. */
#include "arch/arch.h"

enum { FL_CF = 1u << 0, FL_PF = 1u << 2, FL_ZF = 1u << 6, FL_SF = 1u << 7, FL_OF = 1u << 11 };

bool ns_arch_cond_holds(unsigned cc, uint64_t eflags)
{
	bool cf = eflags & FL_CF, pf = eflags & FL_PF, zf = eflags & FL_ZF;
	bool sf = eflags & FL_SF, of = eflags & FL_OF;
	bool r;
	// Odd codes are the negation of the even code below them.
	switch ((cc & 0xf) >> 1) {
	case 0: // o / no
		r = of;
		break;
	case 1: // b / ae
		r = cf;
		break;
	case 2: // e / ne
		r = zf;
		break;
	case 3: // be / a
		r = cf || zf;
		break;
	case 4: // s / ns
		r = sf;
		break;
	case 5: // p / np
		r = pf;
		break;
	case 6: // l / ge
		r = sf != of;
		break;
	default: // le / g
		r = zf || (sf != of);
		break;
	}
	return (cc & 1) ? !r : r;
}
