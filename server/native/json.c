#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "log.h"

#define JSON_MAX_DEPTH 64

struct parser {
	const char *s, *end;
	const char *err;
	int depth;
};

static struct jval *parse_value(struct parser *p);

static void skip_ws(struct parser *p)
{
	while (p->s < p->end && (*p->s == ' ' || *p->s == '\t' || *p->s == '\n' || *p->s == '\r'))
		p->s++;
}

static struct jval *new_val(struct parser *p, enum jtype t)
{
	struct jval *v = calloc(1, sizeof(*v));

	if (!v)
		p->err = "out of memory";
	else
		v->type = t;
	return v;
}

static int lit(struct parser *p, const char *w)
{
	size_t n = strlen(w);

	if ((size_t)(p->end - p->s) < n || memcmp(p->s, w, n))
		return 0;
	p->s += n;
	return 1;
}

static int hex4(const char *s, unsigned *out)
{
	unsigned v = 0;
	int i;

	for (i = 0; i < 4; i++) {
		char c = s[i];

		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= c - '0';
		else if (c >= 'a' && c <= 'f')
			v |= c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			v |= c - 'A' + 10;
		else
			return -1;
	}
	*out = v;
	return 0;
}

static size_t put_utf8(char *o, unsigned cp)
{
	if (cp < 0x80) {
		o[0] = cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = 0xc0 | (cp >> 6);
		o[1] = 0x80 | (cp & 0x3f);
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = 0xe0 | (cp >> 12);
		o[1] = 0x80 | ((cp >> 6) & 0x3f);
		o[2] = 0x80 | (cp & 0x3f);
		return 3;
	}
	o[0] = 0xf0 | (cp >> 18);
	o[1] = 0x80 | ((cp >> 12) & 0x3f);
	o[2] = 0x80 | ((cp >> 6) & 0x3f);
	o[3] = 0x80 | (cp & 0x3f);
	return 4;
}

/* p->s is past the opening quote. The decoded string is never longer than the source. */
static char *parse_string_raw(struct parser *p, size_t *lenp)
{
	const char *q = p->s;
	char *out, *o;

	while (q < p->end && *q != '"') {
		if (*q == '\\')
			q++;
		q++;
	}
	if (q >= p->end) {
		p->err = "unterminated string";
		return NULL;
	}
	out = malloc(q - p->s + 1);
	if (!out) {
		p->err = "out of memory";
		return NULL;
	}
	o = out;
	while (*p->s != '"') {
		unsigned char c = *p->s++;
		unsigned cp, lo;

		if (c < 0x20) {
			p->err = "control character in string";
			goto err;
		}
		if (c != '\\') {
			*o++ = c;
			continue;
		}
		c = *p->s++;
		switch (c) {
		case '"': *o++ = '"'; break;
		case '\\': *o++ = '\\'; break;
		case '/': *o++ = '/'; break;
		case 'b': *o++ = '\b'; break;
		case 'f': *o++ = '\f'; break;
		case 'n': *o++ = '\n'; break;
		case 'r': *o++ = '\r'; break;
		case 't': *o++ = '\t'; break;
		case 'u':
			if (p->end - p->s < 4 || hex4(p->s, &cp)) {
				p->err = "bad \\u escape";
				goto err;
			}
			p->s += 4;
			if (cp >= 0xd800 && cp < 0xdc00 && p->end - p->s >= 6 &&
			    p->s[0] == '\\' && p->s[1] == 'u' && !hex4(p->s + 2, &lo) &&
			    lo >= 0xdc00 && lo < 0xe000) {
				p->s += 6;
				cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
			} else if (cp >= 0xd800 && cp < 0xe000) {
				cp = 0xfffd;	/* lone surrogate */
			}
			o += put_utf8(o, cp);
			break;
		default:
			p->err = "bad escape in string";
			goto err;
		}
	}
	p->s++;
	*o = '\0';
	*lenp = o - out;
	return out;
err:
	free(out);
	return NULL;
}

static struct jval *parse_number(struct parser *p)
{
	const char *start = p->s, *q = p->s;
	char tmp[64], *copy = tmp;
	struct jval *v;
	size_t n;

	if (q < p->end && *q == '-')
		q++;
	if (q < p->end && *q == '0') {
		q++;
	} else if (q < p->end && *q >= '1' && *q <= '9') {
		while (q < p->end && *q >= '0' && *q <= '9')
			q++;
	} else {
		p->err = "bad number";
		return NULL;
	}
	if (q < p->end && *q == '.') {
		q++;
		if (q >= p->end || *q < '0' || *q > '9') {
			p->err = "bad number";
			return NULL;
		}
		while (q < p->end && *q >= '0' && *q <= '9')
			q++;
	}
	if (q < p->end && (*q == 'e' || *q == 'E')) {
		q++;
		if (q < p->end && (*q == '+' || *q == '-'))
			q++;
		if (q >= p->end || *q < '0' || *q > '9') {
			p->err = "bad number";
			return NULL;
		}
		while (q < p->end && *q >= '0' && *q <= '9')
			q++;
	}
	/* strtod needs a terminated copy of exactly the validated text ("0x1" is not JSON) */
	n = q - start;
	if (n >= sizeof(tmp)) {
		copy = malloc(n + 1);
		if (!copy) {
			p->err = "out of memory";
			return NULL;
		}
	}
	memcpy(copy, start, n);
	copy[n] = '\0';
	v = new_val(p, J_NUM);
	if (v)
		v->num = strtod(copy, NULL);
	if (copy != tmp)
		free(copy);
	p->s = q;
	return v;
}

static int push(struct parser *p, struct jval *c, char *key, struct jval *item)
{
	if ((c->n & (c->n - 1)) == 0) {	/* grow at powers of two */
		size_t cap = c->n ? c->n * 2 : 4;
		struct jval **items = realloc(c->items, cap * sizeof(*items));

		if (!items)
			goto oom;
		c->items = items;
		if (c->type == J_OBJ) {
			char **keys = realloc(c->keys, cap * sizeof(*keys));

			if (!keys)
				goto oom;
			c->keys = keys;
		}
	}
	c->items[c->n] = item;
	if (c->type == J_OBJ)
		c->keys[c->n] = key;
	c->n++;
	return 0;
oom:
	p->err = "out of memory";
	return -1;
}

static struct jval *parse_container(struct parser *p, enum jtype t)
{
	char close = t == J_OBJ ? '}' : ']';
	struct jval *c = new_val(p, t);

	if (!c)
		return NULL;
	if (++p->depth > JSON_MAX_DEPTH) {
		p->err = "nesting too deep";
		goto err;
	}
	p->s++;
	skip_ws(p);
	if (p->s < p->end && *p->s == close) {
		p->s++;
		p->depth--;
		return c;
	}
	for (;;) {
		char *key = NULL;
		struct jval *item;
		size_t klen;

		skip_ws(p);
		if (t == J_OBJ) {
			if (p->s >= p->end || *p->s != '"') {
				p->err = "expected a key";
				goto err;
			}
			p->s++;
			key = parse_string_raw(p, &klen);
			if (!key)
				goto err;
			skip_ws(p);
			if (p->s >= p->end || *p->s != ':') {
				free(key);
				p->err = "expected ':'";
				goto err;
			}
			p->s++;
		}
		item = parse_value(p);
		if (!item || push(p, c, key, item)) {
			free(key);
			json_free(item);
			goto err;
		}
		skip_ws(p);
		if (p->s < p->end && *p->s == ',') {
			p->s++;
			continue;
		}
		if (p->s < p->end && *p->s == close) {
			p->s++;
			break;
		}
		p->err = t == J_OBJ ? "expected ',' or '}'" : "expected ',' or ']'";
		goto err;
	}
	p->depth--;
	return c;
err:
	json_free(c);
	return NULL;
}

static struct jval *parse_value(struct parser *p)
{
	struct jval *v;

	skip_ws(p);
	if (p->s >= p->end) {
		p->err = "unexpected end of input";
		return NULL;
	}
	switch (*p->s) {
	case '{':
		return parse_container(p, J_OBJ);
	case '[':
		return parse_container(p, J_ARR);
	case '"':
		v = new_val(p, J_STR);
		if (!v)
			return NULL;
		p->s++;
		v->str = parse_string_raw(p, &v->len);
		if (!v->str) {
			free(v);
			return NULL;
		}
		return v;
	case 't':
	case 'f':
		if (lit(p, *p->s == 't' ? "true" : "false")) {
			v = new_val(p, J_BOOL);
			if (v)
				v->boolean = p->s[-1] == 'e' && p->s[-4] == 't';
			return v;
		}
		break;
	case 'n':
		if (lit(p, "null"))
			return new_val(p, J_NULL);
		break;
	default:
		if (*p->s == '-' || (*p->s >= '0' && *p->s <= '9'))
			return parse_number(p);
	}
	p->err = "unexpected character";
	return NULL;
}

struct jval *json_parse(const char *s, size_t len, const char **err)
{
	struct parser p = { .s = s, .end = s + len };
	struct jval *v = parse_value(&p);

	if (v) {
		skip_ws(&p);
		if (p.s != p.end) {
			p.err = "trailing characters after the value";
			json_free(v);
			v = NULL;
		}
	}
	*err = p.err;
	return v;
}

void json_free(struct jval *v)
{
	size_t i;

	if (!v)
		return;
	for (i = 0; i < v->n; i++) {
		json_free(v->items[i]);
		if (v->keys)
			free(v->keys[i]);
	}
	free(v->items);
	free(v->keys);
	free(v->str);
	free(v);
}

struct jval *json_get(const struct jval *obj, const char *key)
{
	size_t i;

	if (!obj || obj->type != J_OBJ)
		return NULL;
	for (i = obj->n; i-- > 0;)
		if (!strcmp(obj->keys[i], key))
			return obj->items[i];
	return NULL;
}

const char *json_cstr(const struct jval *v)
{
	if (!v || v->type != J_STR || strlen(v->str) != v->len)
		return NULL;
	return v->str;
}

int json_int(const struct jval *v, int64_t min, int64_t max, int64_t *out)
{
	if (!v || v->type != J_NUM || !isfinite(v->num) || v->num != floor(v->num))
		return 0;
	if (v->num < (double)min || v->num > (double)max || fabs(v->num) > 9007199254740992.0)
		return 0;
	*out = (int64_t)v->num;
	return 1;
}

/* Writer. Running out of memory for output is not recoverable: the protocol would lose lines. */
void jb_reserve(struct jbuf *b, size_t more)
{
	size_t cap;
	char *p;

	if (b->len + more <= b->cap)
		return;
	cap = b->cap ? b->cap : 65536;
	while (cap < b->len + more)
		cap *= 2;
	p = realloc(b->p, cap);
	if (!p) {
		pr_perror("cannot grow the output buffer to %zu bytes", cap);
		abort();
	}
	b->p = p;
	b->cap = cap;
}

void jb_write(struct jbuf *b, const char *s, size_t n)
{
	jb_reserve(b, n);
	memcpy(b->p + b->len, s, n);
	b->len += n;
}

void jb_puts(struct jbuf *b, const char *s)
{
	jb_write(b, s, strlen(s));
}

void jb_printf(struct jbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	jb_reserve(b, 256);
	va_start(ap, fmt);
	n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= b->cap - b->len) {
		jb_reserve(b, n + 1);
		va_start(ap, fmt);
		vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
	}
	b->len += n;
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	size_t len, i;
	unsigned cp;

	if (s[0] < 0xc2 || s[0] > 0xf4)
		return 0;
	len = s[0] < 0xe0 ? 2 : s[0] < 0xf0 ? 3 : 4;
	if (len > n)
		return 0;
	cp = s[0] & (0x3f >> (len - 1));
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp < 0xe000))) ||
	    (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
		return 0;
	return len;
}

/* Escapes for JSON; bytes that are not UTF-8 become U+FFFD so every line stays valid. */
void jb_strn(struct jbuf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t i;

	jb_reserve(b, n * 6 + 2);
	b->p[b->len++] = '"';
	for (i = 0; i < n; i++) {
		unsigned char c = s[i];
		size_t u;

		if (c == '"' || c == '\\') {
			b->p[b->len++] = '\\';
			b->p[b->len++] = c;
		} else if (c < 0x20 || c == 0x7f) {
			b->p[b->len++] = '\\';
			b->p[b->len++] = 'u';
			b->p[b->len++] = '0';
			b->p[b->len++] = '0';
			b->p[b->len++] = hex[c >> 4];
			b->p[b->len++] = hex[c & 15];
		} else if (c < 0x80) {
			b->p[b->len++] = c;
		} else if ((u = utf8_len((const unsigned char *)s + i, n - i))) {
			memcpy(b->p + b->len, s + i, u);
			b->len += u;
			i += u - 1;
		} else {
			memcpy(b->p + b->len, "\\ufffd", 6);
			b->len += 6;
		}
	}
	b->p[b->len++] = '"';
}

void jb_str(struct jbuf *b, const char *s)
{
	jb_strn(b, s, strlen(s));
}

void jb_hex(struct jbuf *b, uint64_t v)
{
	static const char hex[] = "0123456789abcdef";
	char tmp[20];
	int i = sizeof(tmp);

	do {
		tmp[--i] = hex[v & 15];
		v >>= 4;
	} while (v);
	jb_reserve(b, 24);
	b->p[b->len++] = '"';
	b->p[b->len++] = '0';
	b->p[b->len++] = 'x';
	memcpy(b->p + b->len, tmp + i, sizeof(tmp) - i);
	b->len += sizeof(tmp) - i;
	b->p[b->len++] = '"';
}

void jb_u64(struct jbuf *b, uint64_t v)
{
	char tmp[24];
	int i = sizeof(tmp);

	do {
		tmp[--i] = '0' + v % 10;
		v /= 10;
	} while (v);
	jb_write(b, tmp + i, sizeof(tmp) - i);
}

void jb_i64(struct jbuf *b, int64_t v)
{
	if (v < 0) {
		jb_write(b, "-", 1);
		jb_u64(b, -(uint64_t)v);
	} else {
		jb_u64(b, v);
	}
}
