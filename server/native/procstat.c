#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "procstat.h"

char *procstat_read(pid_t pid, char *buf, size_t len)
{
	char path[64];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n <= 0)
		return NULL;
	buf[n] = 0;
	return strrchr(buf, ')');
}

int maps_for_each(pid_t pid, int (*fn)(const struct maps_line *m, void *arg), void *arg)
{
	char path[64], line[4096 + 128];
	struct maps_line m;
	int ret = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/maps", pid);
	f = fopen(path, "re");
	if (!f) {
		pr_perror("cannot open %s", path);
		return -1;
	}
	while (!ret && fgets(line, sizeof(line), f)) {
		int n = 0;

		m.name[0] = 0;
		if (sscanf(line, "%lx-%lx %7s %*x %*x:%*x %lu %n", &m.s, &m.e, m.perms, &m.ino, &n) < 4)
			continue;
		if (n > 0)
			sscanf(line + n, "%4095[^\n]", m.name);
		ret = fn(&m, arg);
	}
	fclose(f);
	return ret;
}
