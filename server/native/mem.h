/* Registrations the client asks for (register/unregister/protect) and reading the program's memory. */
#ifndef UFFD_HELPER_MEM_H
#define UFFD_HELPER_MEM_H

#include <stddef.h>
#include <stdint.h>

#include "json.h"

/* Page size of the registered range holding addr: 4096 unless registered as huge pages. */
uint64_t mem_page_size(uint64_t addr);
/* An address argument: "0x.." string or a JSON integer. 0 when valid. */
int mem_addr_arg(const struct jval *v, uint64_t *out);
/* Reads the program's memory without raising userfaults (/proc/PID/mem); -1 with errno. */
int mem_read(uint64_t addr, void *buf, size_t len);
/* 1 when a page (present or swapped) backs addr in the program, 0 when not, -1 unknown. */
int mem_page_mapped(uint64_t addr);
/*
 * 1 when addr is in a range registered for write-protect mode and its page table entry
 * carries the uffd-wp bit (a protected page, or the marker of a protected unpopulated one).
 */
int mem_wp_marked(uint64_t addr);
/* Meaning of a userfaultfd ioctl errno for the client. */
const char *mem_errno_text(int err);
/* Each writes its whole response. */
void mem_cmd_register(int64_t id, const struct jval *req);
void mem_cmd_unregister(int64_t id, const struct jval *req);
void mem_cmd_protect(int64_t id, const struct jval *req);

#endif
