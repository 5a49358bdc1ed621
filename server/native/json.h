/* Minimal JSON: a strict parser into a small tree, and an append-only writer. */
#ifndef UFFD_HELPER_JSON_H
#define UFFD_HELPER_JSON_H

#include <stddef.h>
#include <stdint.h>

enum jtype { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };

struct jval {
	enum jtype type;
	int boolean;
	double num;
	char *str;		/* J_STR: NUL-terminated copy */
	size_t len;		/* J_STR: length, may include \u0000 */
	struct jval **items;	/* J_ARR, J_OBJ values */
	char **keys;		/* J_OBJ keys */
	size_t n;
};

/* Returns NULL and sets *err on failure. */
struct jval *json_parse(const char *s, size_t len, const char **err);
void json_free(struct jval *v);
/* Last value stored under key in an object, or NULL. */
struct jval *json_get(const struct jval *obj, const char *key);
/* A string without embedded NULs, else NULL. */
const char *json_cstr(const struct jval *v);
/* 1 when v is a number holding an integer in [min, max]. */
int json_int(const struct jval *v, int64_t min, int64_t max, int64_t *out);

struct jbuf {
	char *p;
	size_t len, cap;
};

void jb_reserve(struct jbuf *b, size_t more);
void jb_write(struct jbuf *b, const char *s, size_t n);
void jb_puts(struct jbuf *b, const char *s);
void jb_printf(struct jbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A quoted, escaped JSON string. */
void jb_str(struct jbuf *b, const char *s);
void jb_strn(struct jbuf *b, const char *s, size_t n);
/* A quoted hex string "0x..". */
void jb_hex(struct jbuf *b, uint64_t v);
void jb_u64(struct jbuf *b, uint64_t v);
void jb_i64(struct jbuf *b, int64_t v);

#endif
