/* Base64 (RFC 4648, with padding) for page contents on the wire. */
#ifndef UFFD_HELPER_B64_H
#define UFFD_HELPER_B64_H

#include <stddef.h>

#include "json.h"

/* Appends the quoted base64 text of p[0..n) to b. */
void b64_json(struct jbuf *b, const unsigned char *p, size_t n);
/* Decodes s (len chars) into out (room for max bytes); the byte count, or -1 if malformed. */
long b64_decode(const char *s, size_t len, unsigned char *out, size_t max);

#endif
