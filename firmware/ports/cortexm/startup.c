/* Cortex-M startup shared by every port: vector table, reset handler, fault handler.
 *
 * External interrupts all enter irq_dispatch, which reads the active vector from IPSR and calls
 * the board's board_irq(n); a board only implements the interrupts it uses.
 */
#include <stdint.h>
#include <string.h>

#include "port.h"

#ifndef NUM_IRQS
#define NUM_IRQS 32
#endif

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
int main(void);

void reset_handler(void) __attribute__((noreturn));
void fault_handler(void);
void irq_dispatch(void);
void default_handler(void);

__attribute__((weak)) void board_irq(int n) { (void)n; }

void reset_handler(void)
{
    memcpy(&_sdata, &_sidata, (size_t)((uint8_t *)&_edata - (uint8_t *)&_sdata));
    memset(&_sbss, 0, (size_t)((uint8_t *)&_ebss - (uint8_t *)&_sbss));
    main();
    board_reset();
}

void fault_handler(void)
{
    /* Tell the host, then reboot: it sees the READY banner and re-sends its state. */
    static const char msg[] = "\nERR FAULT the core took a fault; rebooting\n";
    board_uart_write(msg, sizeof(msg) - 1);
    board_reset();
}

void irq_dispatch(void)
{
    uint32_t ipsr;
    __asm volatile("mrs %0, ipsr" : "=r"(ipsr));
    board_irq((int)(ipsr & 0x1FFu) - 16);
}

void default_handler(void)
{
    for (;;) {
    }
}

typedef void (*vector)(void);

__attribute__((section(".vectors"), used)) const vector vector_table[16 + NUM_IRQS] = {
    [0] = (vector)&_estack,
    [1] = reset_handler,
    [2] = default_handler,   /* NMI */
    [3] = fault_handler,     /* HardFault */
    [4] = fault_handler,     /* MemManage */
    [5] = fault_handler,     /* BusFault */
    [6] = fault_handler,     /* UsageFault */
    [11] = default_handler,  /* SVCall */
    [12] = default_handler,  /* DebugMon */
    [14] = default_handler,  /* PendSV */
    [15] = default_handler,  /* SysTick */
    [16 ... 16 + NUM_IRQS - 1] = irq_dispatch,
};
