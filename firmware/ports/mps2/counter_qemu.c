/* Counter for QEMU's MPS2 models run with `-icount shift=0`: there each guest instruction advances
 * virtual time by exactly 1 ns, so the CMSDK APB timer 0 (25 MHz, 40 ns a tick) counts
 * instructions in steps of 40. QEMU models no pipeline, caches or wait states: these are
 * instruction counts, not cycles. counter_start reloads the timer, so every bracket starts on a
 * tick boundary and the same code gives the same count on every run.
 */
#include <stdint.h>

#include "port.h"

#define REG(addr) (*(volatile uint32_t *)(addr))
#define TIMER0 0x40000000u
#define TIMER_CTRL REG(TIMER0 + 0x00u)
#define TIMER_VALUE REG(TIMER0 + 0x04u)
#define TIMER_RELOAD REG(TIMER0 + 0x08u)
#define TIMER_ENABLE (1u << 0)

#ifndef TIMER_HZ
#define TIMER_HZ 25000000u
#endif
#define NS_PER_TICK (1000000000u / TIMER_HZ)

int counter_init(void)
{
    TIMER_RELOAD = 0xFFFFFFFFu;
    TIMER_VALUE = 0xFFFFFFFFu;
    TIMER_CTRL = TIMER_ENABLE;
    uint32_t a = TIMER_VALUE;
    for (volatile int i = 0; i < 1000; ++i) {
    }
    return TIMER_VALUE != a ? 0 : -1;
}

void counter_start(void) { TIMER_VALUE = 0xFFFFFFFFu; }

uint32_t counter_stop(void) { return (0xFFFFFFFFu - TIMER_VALUE) * NS_PER_TICK; }

const char *counter_name(void) { return "qemu-icount"; }
const char *counter_unit(void) { return "instructions"; }
uint32_t counter_resolution(void) { return NS_PER_TICK; }
