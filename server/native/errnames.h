#ifndef UFFD_HELPER_ERRNAMES_H
#define UFFD_HELPER_ERRNAMES_H

/* "EPERM" for EPERM; "E123" style text for numbers not in the table. */
const char *errno_name(int err);

#endif
