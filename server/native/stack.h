/* Where a held fault happened: the thread's registers and its unwound stack (libdw). */
#ifndef UFFD_HELPER_STACK_H
#define UFFD_HELPER_STACK_H

#include <stdint.h>

#include "json.h"

/* `stack {seq}` (docs/protocol.md): writes the whole response. */
void stack_cmd(int64_t id, const struct jval *req);

#endif
