#include <string.h>

#include "b64.h"

static const char alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void b64_json(struct jbuf *b, const unsigned char *p, size_t n)
{
	size_t i;
	char *o;

	jb_reserve(b, (n + 2) / 3 * 4 + 2);
	o = b->p + b->len;
	*o++ = '"';
	for (i = 0; i + 2 < n; i += 3) {
		*o++ = alphabet[p[i] >> 2];
		*o++ = alphabet[((p[i] & 3) << 4) | (p[i + 1] >> 4)];
		*o++ = alphabet[((p[i + 1] & 15) << 2) | (p[i + 2] >> 6)];
		*o++ = alphabet[p[i + 2] & 63];
	}
	if (i < n) {
		*o++ = alphabet[p[i] >> 2];
		if (i + 1 < n) {
			*o++ = alphabet[((p[i] & 3) << 4) | (p[i + 1] >> 4)];
			*o++ = alphabet[(p[i + 1] & 15) << 2];
		} else {
			*o++ = alphabet[(p[i] & 3) << 4];
			*o++ = '=';
		}
		*o++ = '=';
	}
	*o++ = '"';
	b->len = o - b->p;
}

static int value(char c)
{
	const char *q = c ? strchr(alphabet, c) : NULL;

	return q ? (int)(q - alphabet) : -1;
}

long b64_decode(const char *s, size_t len, unsigned char *out, size_t max)
{
	size_t i, n = 0;
	unsigned acc = 0;
	int bits = 0, pad = 0;

	if (len % 4)
		return -1;
	for (i = 0; i < len; i++) {
		int v;

		if (s[i] == '=') {
			if (i + 2 < len)
				return -1;
			pad++;
			continue;
		}
		if (pad)
			return -1;
		v = value(s[i]);
		if (v < 0)
			return -1;
		acc = (acc << 6) | (unsigned)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (n == max)
				return -1;
			out[n++] = (acc >> bits) & 0xff;
		}
	}
	return (long)n;
}
