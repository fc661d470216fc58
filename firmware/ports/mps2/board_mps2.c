/* Board layer of the Arm MPS2 FPGA images (AN385 Cortex-M3, AN386 Cortex-M4, AN500 Cortex-M7) as
 * QEMU models them: CMSDK APB UART0 at 0x40004000 (RX interrupt = IRQ 0), 25 MHz system clock.
 */
#include <stdint.h>

#include "port.h"

#ifndef BOARD_NAME
#define BOARD_NAME "mps2-an386"
#endif
#ifndef CORE_NAME
#define CORE_NAME "cortex-m4"
#endif
#ifndef CLOCK_HZ
#define CLOCK_HZ 25000000u
#endif
#ifndef BAUD
#define BAUD 115200u
#endif

#define REG(addr) (*(volatile uint32_t *)(addr))
#define UART0 0x40004000u
#define UART_DATA REG(UART0 + 0x00u)
#define UART_STATE REG(UART0 + 0x04u)
#define UART_CTRL REG(UART0 + 0x08u)
#define UART_INTCLEAR REG(UART0 + 0x0Cu)
#define UART_BAUDDIV REG(UART0 + 0x10u)
#define STATE_TX_FULL (1u << 0)
#define STATE_RX_FULL (1u << 1)
#define CTRL_TX_EN (1u << 0)
#define CTRL_RX_EN (1u << 1)
#define CTRL_RX_INT_EN (1u << 3)
#define INT_RX (1u << 1)
#define UART0_RX_IRQ 0

#define NVIC_ISER0 REG(0xE000E100u)
#define SCB_AIRCR REG(0xE000ED0Cu)

/* Bytes received by the interrupt handler, consumed by board_uart_read. */
#define RX_SIZE 2048u
static volatile uint8_t rx_buf[RX_SIZE];
static volatile uint32_t rx_head, rx_tail;

void board_init(void)
{
    UART_BAUDDIV = CLOCK_HZ / BAUD;
    UART_CTRL = CTRL_TX_EN | CTRL_RX_EN | CTRL_RX_INT_EN;
    NVIC_ISER0 = 1u << UART0_RX_IRQ;
    __asm volatile("cpsie i" ::: "memory");
}

void board_irq(int n)
{
    if (n != UART0_RX_IRQ) return;
    /* Clear first, then drain: a byte landing after the last check raises the interrupt again
     * (clearing after the drain could swallow that byte's interrupt and stall the line). */
    UART_INTCLEAR = INT_RX;
    while (UART_STATE & STATE_RX_FULL) {
        uint8_t byte = (uint8_t)UART_DATA;
        uint32_t next = (rx_head + 1u) % RX_SIZE;
        if (next != rx_tail) {  /* a full buffer drops the byte; the host's CRC check catches it */
            rx_buf[rx_head] = byte;
            rx_head = next;
        }
    }
}

int board_uart_read(void)
{
    if (rx_tail == rx_head) return -1;
    uint8_t byte = rx_buf[rx_tail];
    rx_tail = (rx_tail + 1u) % RX_SIZE;
    return byte;
}

void board_uart_write(const char *buf, uint32_t len)
{
    for (uint32_t i = 0; i < len; ++i) {
        while (UART_STATE & STATE_TX_FULL) {
        }
        UART_DATA = (uint8_t)buf[i];
    }
}

void board_wait(void)
{
    /* Sleep until the next interrupt unless a byte is already waiting (no lost wake-up: WFI
     * returns on a pending interrupt even while PRIMASK masks it). Under QEMU this lets the
     * emulator idle instead of spinning a host core. */
    __asm volatile("cpsid i" ::: "memory");
    if (rx_tail == rx_head) __asm volatile("wfi");
    __asm volatile("cpsie i" ::: "memory");
}

void board_reset(void)
{
    __asm volatile("dsb" ::: "memory");
    SCB_AIRCR = 0x05FA0004u;  /* VECTKEY | SYSRESETREQ */
    __asm volatile("dsb" ::: "memory");
    for (;;) {
    }
}

const char *board_name(void) { return BOARD_NAME; }
const char *board_core(void) { return CORE_NAME; }
uint32_t board_clock_hz(void) { return CLOCK_HZ; }
