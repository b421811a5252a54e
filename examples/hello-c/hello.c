/*
 * ukedge example: the smallest useful unikernel application.
 *
 * Prints "<greeting>, <args>!" and its environment on the console, writes one JSON line to the
 * results device (/dev/ukedge-results; falls back to stdout when it is missing, e.g. on a
 * plain host), and exits with the status given by --exit=N or HELLO_EXIT, so that the host's
 * exit-status propagation can be tested end to end.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define RESULTS_DEVICE "/dev/ukedge-results"

/* Writes s as a JSON string literal (quotes included). */
static void json_string(FILE *out, const char *s)
{
	fputc('"', out);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			fprintf(out, "\\%c", c);
		else if (c == '\n')
			fputs("\\n", out);
		else if (c < 0x20)
			fprintf(out, "\\u%04x", c);
		else
			fputc(c, out);
	}
	fputc('"', out);
}

static int parse_status(const char *text, int *status)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(text, &end, 10);
	if (errno || end == text || *end || v < 0 || v > 255)
		return -1;
	*status = (int)v;
	return 0;
}

int main(int argc, char **argv)
{
	const char *greeting = getenv("HELLO_GREETING");
	const char *exit_env = getenv("HELLO_EXIT");
	int status = 0;
	int i, first = 1;
	FILE *results = NULL;
	int fd;

	if (!greeting || !*greeting)
		greeting = "Hello";
	if (exit_env && parse_status(exit_env, &status) != 0) {
		fprintf(stderr, "hello-c: HELLO_EXIT=%s is not a status 0-255\n", exit_env);
		return 2;
	}

	printf("%s,", greeting);
	for (i = 1; i < argc; i++) {
		if (strncmp(argv[i], "--exit=", 7) == 0) {
			if (parse_status(argv[i] + 7, &status) != 0) {
				fprintf(stderr, "hello-c: %s is not a status 0-255\n", argv[i]);
				return 2;
			}
			continue;
		}
		printf(" %s", argv[i]);
	}
	printf("!\n");
	printf("pid %d, argc %d\n", (int)getpid(), argc);
	for (char **e = environ; *e; e++)
		printf("env %s\n", *e);
	fflush(stdout);

	/* Never O_CREAT: on a plain host the device is missing and must not become a file. */
	fd = open(RESULTS_DEVICE, O_WRONLY | O_APPEND | O_CLOEXEC);
	if (fd >= 0)
		results = fdopen(fd, "a");
	if (!results)
		results = stdout;
	fputs("{\"app\":\"hello-c\",\"greeting\":", results);
	json_string(results, greeting);
	fputs(",\"args\":[", results);
	for (i = 1; i < argc; i++) {
		if (!first)
			fputc(',', results);
		json_string(results, argv[i]);
		first = 0;
	}
	fprintf(results, "],\"exit\":%d,\"time\":%lld}\n", status, (long long)time(NULL));
	if (results != stdout)
		fclose(results);
	else
		fflush(stdout);
	return status;
}
