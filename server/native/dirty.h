/* Asynchronous write-protect: the `dirty` request (PAGEMAP_SCAN of written pages). */
#ifndef UFFD_HELPER_DIRTY_H
#define UFFD_HELPER_DIRTY_H

#include <stdint.h>

#include "json.h"

/* Writes the whole response: the pages written in [start, end) since protected or reset. */
void dirty_cmd(int64_t id, const struct jval *req);

#endif
