/*
 * Measures the host's TSC frequency in kHz (three 50 ms rounds, one number per line).
 *
 * Under TCG a guest's TSC ticks at the host's TSC rate, so handing this number to the guest
 * kernel (tsc_early_khz=) skips its PIT-based calibration, which is slow and often fails under
 * emulation and leaves the guest on a 10 ms jiffies clock.
 */
#include <stdint.h>
#include <stdio.h>
#include <time.h>

static uint64_t rdtsc(void)
{
	uint32_t lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((uint64_t)hi << 32) | lo;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_RAW, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(void)
{
	for (int round = 0; round < 3; round++) {
		struct timespec pause = {0, 50 * 1000 * 1000};
		double t0 = now();
		uint64_t c0 = rdtsc();
		nanosleep(&pause, NULL);
		double t1 = now();
		uint64_t c1 = rdtsc();
		printf("%.0f\n", (double)(c1 - c0) / (t1 - t0) / 1000.0);
	}
	return 0;
}
