/* A shared library for end-to-end tests: tracepoints in a .so the program links.
 * Lines marked TAG_* are used by tests/e2e. */
struct point {
	int x, y;
};

__attribute__((noinline)) long geom_area(const struct point *a, const struct point *b)
{
	long w = b->x - a->x, h = b->y - a->y;
	long area = w * h;			/* TAG_GEOM_AREA */
	return area < 0 ? -area : area;
}
