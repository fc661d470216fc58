/* The two layers a port provides: a board (UART, sleep, reset, clock) and a counter.
 *
 * The protocol core (main.c) and the kernels (kernels.c) only talk to these functions, so a port
 * to another board is one board_*.c file (UART + linker script) plus, on real silicon, the
 * generic DWT counter in ports/cortexm/counter_dwt.c.
 */
#ifndef HWLAT_PORT_H
#define HWLAT_PORT_H

#include <stdint.h>

/* ---- board ---------------------------------------------------------------------------------- */
void board_init(void);                                 /* clocks, UART, interrupts */
void board_uart_write(const char *buf, uint32_t len);  /* blocking write */
int board_uart_read(void);                             /* next received byte, or -1 if none */
void board_wait(void);                                 /* sleep until an interrupt may have come */
void board_reset(void) __attribute__((noreturn));      /* system reset; the firmware reboots */
const char *board_name(void);                          /* e.g. "mps2-an386" */
const char *board_core(void);                          /* e.g. "cortex-m4" */
uint32_t board_clock_hz(void);                         /* nominal core clock */

/* ---- counter -------------------------------------------------------------------------------- */
/* counter_start/counter_stop bracket one kernel call; counter_stop returns the elapsed count in
 * counter_unit() units (cycles on silicon, instructions under QEMU -icount shift=0). */
int counter_init(void);               /* 0 when the counter runs, else a negative code */
void counter_start(void);
uint32_t counter_stop(void);
const char *counter_name(void);       /* "dwt-cyccnt", "qemu-icount" */
const char *counter_unit(void);       /* "cycles" or "instructions" */
uint32_t counter_resolution(void);    /* smallest step of the count, in counter_unit() */

#endif
