/*
 * libml: one of the many tiny shared libraries demo/bin/manylibs is linked against (built 56
 * times with a different ML_N). Each brings its own text, data and bss mappings, so the
 * debugged process has many VMAs, as a large program does.
 */
char ml_bss[3 * 4096];
int ml_data[1024] = { ML_N };

int ml_value(void)
{
	return ml_data[0] + ml_bss[0];
}
