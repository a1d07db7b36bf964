/* The soak workload's child: exits at once. Built static, so that it opens
 * and reads nothing (no dynamic loader): its only events are exec and exit. */
int main(void) { return 0; }
