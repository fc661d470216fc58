/* Generic Cortex-M3/M4/M7/M33 counter: the DWT cycle counter (CYCCNT), one count per core cycle.
 *
 * Cortex-M0/M0+ have no CYCCNT; on those, write a counter on a SysTick or a board timer instead.
 */
#include <stdint.h>

#include "port.h"

#define DEMCR (*(volatile uint32_t *)0xE000EDFCu)
#define DWT_CTRL (*(volatile uint32_t *)0xE0001000u)
#define DWT_CYCCNT (*(volatile uint32_t *)0xE0001004u)
#define DWT_LAR (*(volatile uint32_t *)0xE0001FB0u)

#define DEMCR_TRCENA (1u << 24)
#define DWT_CTRL_NOCYCCNT (1u << 25)
#define DWT_CTRL_CYCCNTENA (1u << 0)

static uint32_t start;

int counter_init(void)
{
    DEMCR |= DEMCR_TRCENA;
    DWT_LAR = 0xC5ACCE55u;  /* unlock on cores that lock the DWT (Cortex-M7) */
    if (DWT_CTRL & DWT_CTRL_NOCYCCNT) return -2;
    DWT_CYCCNT = 0;
    DWT_CTRL |= DWT_CTRL_CYCCNTENA;
    uint32_t a = DWT_CYCCNT;
    for (volatile int i = 0; i < 100; ++i) {
    }
    return DWT_CYCCNT != a ? 0 : -1;  /* emulators often leave CYCCNT at zero */
}

void counter_start(void) { start = DWT_CYCCNT; }
uint32_t counter_stop(void) { return DWT_CYCCNT - start; }
const char *counter_name(void) { return "dwt-cyccnt"; }
const char *counter_unit(void) { return "cycles"; }
uint32_t counter_resolution(void) { return 1; }
