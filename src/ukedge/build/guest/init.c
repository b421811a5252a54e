/*
 * ukedge guest init: PID 1 of every ukedge unikernel image (the platform adaptation layer).
 *
 * It prepares the little a single application needs (mounts, hostname, network, RNG, clock,
 * results and control ports), starts the application as its only child, forwards stop requests
 * to it, reaps orphans, and when the application ends prints one machine-readable exit line on
 * the console and resets the VM (QEMU runs with -no-reboot, so a reset ends QEMU).
 *
 * The contract with the host (kernel command line parameters, launch file, exit line, ports) is
 * the Python package ukedge.guest and must change together with it. Built with
 * -DUKEDGE_INIT_SELFTEST, main() is replaced by one that runs this file's parsers and writers
 * on the host, so tests/guest/test_init_agrees.py can check both sides read the same corpus.
 *
 * Written against the kernel ABI only (no libc extras, no kernel headers: musl-gcc ships none),
 * so it builds with musl-gcc or gcc -static alike. Nothing here waits for anything: boot time
 * under TCG is the main cost of a short-lived application.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <net/route.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/klog.h>
#include <sys/mount.h>
#include <sys/epoll.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define LAUNCH_PATH "/ukedge/launch"
#define LAUNCH_MAGIC "ukedge-launch=1"
#define SEED_PATH "/ukedge/seed"
#define MAX_SEED 256
#define RESULTS_PORT "ukedge.results"
#define CONTROL_PORT "ukedge.control"
#define RESULTS_DEVICE "/dev/ukedge-results"
#define EXIT_PREFIX "ukedge-exit: "
/* Sent to the application's process group once a resumed clone has its own clock, entropy, MAC
 * and hostname: ignored by default, so only runtimes that reseed on it (ukedge's python) see it. */
#define RESUME_SIGNAL SIGWINCH
/* Printed on the console when ukedge.hold makes init wait before starting the application (a
 * "pre-app" prewarm snapshots the machine then); "resumed" on the control port releases it. */
#define HELD_LINE "ukedge-held"
/* Init's exit status when the kernel could not unpack the initramfs (guest memory too small). */
#define UNPACK_FAILED_STATUS 125
/* Where init mounts the shared runtime image (ukedge.ro=) before binding its directories. */
#define RUNTIME_MOUNT "/ukedge/runtime"
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* From <linux/random.h> and <linux/input*.h>, which musl does not ship. */
#define RNDADDENTROPY 0x40085203
#define RNDRESEEDCRNG 0x5207 /* _IO('R', 0x07), <linux/random.h> */
#define EV_KEY 1
#define KEY_POWER 116
struct kernel_input_event {
	long tv_sec;
	long tv_usec;
	uint16_t type;
	uint16_t code;
	int32_t value;
};

#define MAX_ARGS 4096
#define MAX_ENV 4096
#define MAX_INPUTS 8

static int console_fd = 2;
static int debug;

static void say(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	int n = snprintf(buf, sizeof buf, "ukedge-init: ");
	va_start(ap, fmt);
	n += vsnprintf(buf + n, sizeof buf - (size_t)n, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof buf - 2)
		n = (int)sizeof buf - 2;
	buf[n++] = '\n';
	(void)!write(console_fd, buf, (size_t)n);
}

#define DEBUG(...)                                                                                 \
	do {                                                                                       \
		if (debug)                                                                         \
			say(__VA_ARGS__);                                                          \
	} while (0)

/* The exit line for status (0-255): EXIT_PREFIX {"status": N} and a newline. */
static int format_exit(char *line, size_t size, int status)
{
	return snprintf(line, size, EXIT_PREFIX "{\"status\": %d}\n", status);
}

/* Print the exit line, make sure it left the UART, and reset the machine. Never returns. */
static void finish(int status)
{
	char line[64];
	int n = format_exit(line, sizeof line, status);
	sync();
	(void)!write(console_fd, line, (size_t)n);
	tcdrain(console_fd);
	reboot(RB_AUTOBOOT);
	/* Only reached without CAP_SYS_BOOT, which PID 1 always has. */
	for (;;)
		pause();
}

static void mount_fs(const char *source, const char *target, const char *type, unsigned long flags,
		     const char *data)
{
	mkdir(target, 0755);
	if (mount(source, target, type, flags, data) != 0 && errno != EBUSY)
		say("mount %s on %s: %s", type, target, strerror(errno));
}

static void mount_all(void)
{
	mount_fs("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	mount_fs("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	mount_fs("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
	mount_fs("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
	mount_fs("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
	mkdir("/dev/shm", 01777);
	mount_fs("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
	(void)!symlink("/proc/self/fd", "/dev/fd");
	(void)!symlink("/proc/self/fd/0", "/dev/stdin");
	(void)!symlink("/proc/self/fd/1", "/dev/stdout");
	(void)!symlink("/proc/self/fd/2", "/dev/stderr");
}

static ssize_t read_file(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t total = 0, n;
	if (fd < 0)
		return -1;
	while ((size_t)total < size - 1 && (n = read(fd, buf + total, size - 1 - (size_t)total)) > 0)
		total += n;
	close(fd);
	buf[total] = '\0';
	return total;
}

static void write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		say("write %s: %s", path, strerror(errno));
		return;
	}
	(void)!write(fd, text, strlen(text));
	close(fd);
}

/* ---- kernel command line: ukedge.<name>=<value> ---- */

struct params {
	char *ip;   /* ukedge.ip=A.B.C.D/prefix */
	char *gw;   /* ukedge.gw=A.B.C.D */
	char *dns;  /* ukedge.dns=A.B.C.D */
	char *time; /* ukedge.time=<seconds since the epoch>[.<fraction>] */
	int hold;   /* ukedge.hold: wait for "resumed" on the control port before starting the app */
	char *ro;   /* ukedge.ro=/dir[,/dir...]: directories bound from the runtime image */
};

static char cmdline[4096];

static void parse_cmdline(struct params *p, const char *path)
{
	char *save = NULL, *tok;
	if (read_file(path, cmdline, sizeof cmdline) < 0)
		return;
	for (tok = strtok_r(cmdline, " \t\n", &save); tok; tok = strtok_r(NULL, " \t\n", &save)) {
		if (strncmp(tok, "ukedge.", 7) != 0)
			continue;
		char *key = tok + 7, *eq = strchr(key, '=');
		if (!eq) {
			if (strcmp(key, "debug") == 0)
				debug = 1;
			else if (strcmp(key, "hold") == 0)
				p->hold = 1;
			continue;
		}
		*eq = '\0';
		char *value = eq + 1;
		if (strcmp(key, "ip") == 0)
			p->ip = value;
		else if (strcmp(key, "gw") == 0)
			p->gw = value;
		else if (strcmp(key, "dns") == 0)
			p->dns = value;
		else if (strcmp(key, "time") == 0)
			p->time = value;
		else if (strcmp(key, "ro") == 0)
			p->ro = value;
	}
}

/* ---- the shared runtime image (ukedge.ro=) ---- */

/* erofs lists dax=always among the options of a mount that got DAX, and drops it otherwise. */
static int mounted_with_dax(void)
{
	static char mounts[8192];
	char *save = NULL;
	if (read_file("/proc/mounts", mounts, sizeof mounts) < 0)
		return 0;
	for (char *line = strtok_r(mounts, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
		if (strstr(line, " " RUNTIME_MOUNT " erofs ") && strstr(line, "dax"))
			return 1;
	return 0;
}

/*
 * The runtime's directories come from a read-only erofs image instead of the initramfs: on
 * /dev/pmem0 (virtio-pmem) it is mounted with DAX, so its files map the host's file directly
 * and the guest's page cache holds no copy; /dev/vda (virtio-blk) is the fallback without DAX.
 * The nvdimm bus registers its namespaces asynchronously, so the node may appear a little after
 * init starts: wait for it up to 5 s. Returns 0, or -1 when the application cannot run.
 */
static int mount_runtime(char *dirs)
{
	const char *dev = NULL, *data = NULL;
	for (int i = 0; i < 500 && !dev; i++) {
		if (access("/dev/pmem0", F_OK) == 0) {
			dev = "/dev/pmem0";
			data = "dax=always";
		} else if (access("/dev/vda", F_OK) == 0) {
			dev = "/dev/vda";
		} else {
			struct timespec ts = {0, 10 * 1000 * 1000};
			nanosleep(&ts, NULL);
		}
	}
	if (!dev) {
		say("no runtime image device (/dev/pmem0 or /dev/vda) for ukedge.ro=%s", dirs);
		return -1;
	}
	mkdir(RUNTIME_MOUNT, 0755);
	if (mount(dev, RUNTIME_MOUNT, "erofs", MS_RDONLY, data) != 0) {
		say("mount erofs %s on %s: %s", dev, RUNTIME_MOUNT, strerror(errno));
		return -1;
	}
	char *save = NULL;
	for (char *dir = strtok_r(dirs, ",", &save); dir; dir = strtok_r(NULL, ",", &save)) {
		char src[512];
		snprintf(src, sizeof src, "%s%s", RUNTIME_MOUNT, dir);
		mkdir(dir, 0755);
		if (mount(src, dir, NULL, MS_BIND, NULL) != 0) {
			say("bind %s on %s: %s", src, dir, strerror(errno));
			return -1;
		}
	}
	if (data && !mounted_with_dax())
		say("runtime image %s mounted without DAX (the kernel or the device refused it): "
		    "the guest's page cache holds what the application reads from it",
		    dev);
	DEBUG("runtime image %s mounted%s", dev, data ? " with dax" : "");
	return 0;
}

/* ---- clock and RNG ---- */

static void set_clock(const char *value)
{
	char *end;
	double t = strtod(value, &end);
	if (*end != '\0' || t <= 0) {
		say("ignoring bad ukedge.time=%s", value);
		return;
	}
	struct timespec ts = {(time_t)t, (long)((t - (double)(time_t)t) * 1e9)};
	if (clock_settime(CLOCK_REALTIME, &ts) != 0)
		say("clock_settime: %s", strerror(errno));
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Credit a seed to the kernel RNG and reseed it at once (matters for resumed clones, which
 * would otherwise keep the snapshot's state until the next scheduled reseed). Only seeds that
 * came over a channel no other local user can read reach here: the seed file in the initrd
 * (mode 0600 on the host) and the control port (a socket in a 0700 directory); never the
 * kernel command line, which every user on the host sees in ps.
 */
static void credit_seed(const unsigned char *seed, size_t len, const char *from)
{
	struct {
		int entropy_count;
		int buf_size;
		unsigned char buf[MAX_SEED];
	} info;
	if (len == 0 || len > sizeof info.buf) {
		say("ignoring a seed of %zu bytes from %s (want 1 to %d)", len, from, MAX_SEED);
		return;
	}
	memcpy(info.buf, seed, len);
	info.buf_size = (int)len;
	info.entropy_count = (int)len * 8;
	int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
	if (fd < 0 || ioctl(fd, RNDADDENTROPY, &info) != 0)
		say("seeding the RNG: %s", strerror(errno));
	else if (ioctl(fd, RNDRESEEDCRNG) != 0)
		say("reseeding the RNG: %s", strerror(errno));
	else
		DEBUG("credited %zu bits of entropy from %s", len * 8, from);
	if (fd >= 0)
		close(fd);
	memset(&info, 0, sizeof info);
}

/* A "seed <hex>" control line. */
static void seed_from_hex(const char *hex)
{
	unsigned char buf[MAX_SEED];
	size_t len = strlen(hex), i;
	if (len % 2 || len / 2 > sizeof buf) {
		say("ignoring a bad seed (want an even number of hex digits, at most %d)", 2 * MAX_SEED);
		return;
	}
	for (i = 0; i < len / 2; i++) {
		int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
		if (hi < 0 || lo < 0) {
			say("ignoring a bad seed (not hex)");
			return;
		}
		buf[i] = (unsigned char)(hi << 4 | lo);
	}
	credit_seed(buf, len / 2, "the control port");
	memset(buf, 0, sizeof buf);
}

/* The boot's seed file: credited, then deleted so the application never sees it. */
static void seed_from_file(const char *path)
{
	unsigned char buf[MAX_SEED + 1];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno != ENOENT)
			say("open %s: %s", path, strerror(errno));
		return;
	}
	ssize_t n = read(fd, buf, sizeof buf);
	close(fd);
	if (unlink(path) != 0)
		say("unlink %s: %s", path, strerror(errno));
	if (n < 0)
		say("read %s: %s", path, strerror(errno));
	else
		credit_seed(buf, (size_t)n, path);
	memset(buf, 0, sizeof buf);
}

/* ---- network ---- */

static int if_up(int sock, const char *name)
{
	struct ifreq ifr;
	memset(&ifr, 0, sizeof ifr);
	strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
	if (ioctl(sock, SIOCGIFFLAGS, &ifr) != 0)
		return -1;
	ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
	return ioctl(sock, SIOCSIFFLAGS, &ifr);
}

static int set_addr(int sock, const char *name, unsigned long req, in_addr_t addr)
{
	struct ifreq ifr;
	struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_addr;
	memset(&ifr, 0, sizeof ifr);
	strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
	sin->sin_family = AF_INET;
	sin->sin_addr.s_addr = addr;
	return ioctl(sock, req, &ifr);
}

/* eth0's address once configured ("" without one), for /etc/hosts after a hostname change. */
static char ipbuf[64];

static void write_hosts(const char *hostname)
{
	char hosts[512];
	snprintf(hosts, sizeof hosts, "127.0.0.1\tlocalhost\n%s\t%s\n", ipbuf[0] ? ipbuf : "127.0.1.1",
		 hostname);
	write_file("/etc/hosts", hosts);
}

/*
 * Give eth0 another MAC address (a resumed clone has the snapshot's). virtio-net tells QEMU over
 * its control queue, so QEMU's receive filter follows; with arp_notify the kernel announces the
 * new address (gratuitous ARP), so QEMU's user-mode network sends to it from then on.
 */
static void set_mac(const char *text)
{
	unsigned int b[6];
	char end;
	if (sscanf(text, "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &end) !=
		    6 ||
	    (b[0] & 1)) {
		say("ignoring bad MAC address %.40s", text);
		return;
	}
	write_file("/proc/sys/net/ipv4/conf/eth0/arp_notify", "1\n");
	struct ifreq ifr;
	memset(&ifr, 0, sizeof ifr);
	strncpy(ifr.ifr_name, "eth0", IFNAMSIZ - 1);
	ifr.ifr_hwaddr.sa_family = ARPHRD_ETHER;
	for (int i = 0; i < 6; i++)
		ifr.ifr_hwaddr.sa_data[i] = (char)b[i];
	int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (sock < 0 || ioctl(sock, SIOCSIFHWADDR, &ifr) != 0)
		say("setting the MAC address of eth0: %s", strerror(errno));
	if (sock >= 0)
		close(sock);
}

static void set_hostname(const char *hostname)
{
	if (sethostname(hostname, strlen(hostname)) != 0)
		say("sethostname: %s", strerror(errno));
	else
		write_hosts(hostname);
}

static void setup_network(const struct params *p)
{
	int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (sock < 0) {
		say("socket: %s", strerror(errno));
		return;
	}
	if (if_up(sock, "lo") != 0)
		say("bringing up lo: %s", strerror(errno));
	ipbuf[0] = '\0';
	if (p->ip) {
		int prefix = 24;
		struct in_addr addr;
		snprintf(ipbuf, sizeof ipbuf, "%s", p->ip);
		char *slash = strchr(ipbuf, '/');
		if (slash) {
			*slash = '\0';
			prefix = atoi(slash + 1);
		}
		if (inet_pton(AF_INET, ipbuf, &addr) != 1 || prefix < 0 || prefix > 32) {
			say("ignoring bad ukedge.ip=%s", p->ip);
			ipbuf[0] = '\0';
		} else {
			in_addr_t mask = prefix ? htonl(~0u << (32 - prefix)) : 0;
			if (set_addr(sock, "eth0", SIOCSIFADDR, addr.s_addr) != 0 ||
			    set_addr(sock, "eth0", SIOCSIFNETMASK, mask) != 0 ||
			    if_up(sock, "eth0") != 0) {
				say("configuring eth0: %s", strerror(errno));
				ipbuf[0] = '\0';
			}
		}
	}
	if (ipbuf[0] && p->gw) {
		struct rtentry rt;
		struct in_addr gw;
		memset(&rt, 0, sizeof rt);
		if (inet_pton(AF_INET, p->gw, &gw) != 1) {
			say("ignoring bad ukedge.gw=%s", p->gw);
		} else {
			struct sockaddr_in *dst = (struct sockaddr_in *)&rt.rt_dst;
			struct sockaddr_in *gate = (struct sockaddr_in *)&rt.rt_gateway;
			struct sockaddr_in *mask = (struct sockaddr_in *)&rt.rt_genmask;
			dst->sin_family = gate->sin_family = mask->sin_family = AF_INET;
			gate->sin_addr = gw;
			rt.rt_flags = RTF_UP | RTF_GATEWAY;
			rt.rt_dev = (char *)"eth0";
			if (ioctl(sock, SIOCADDRT, &rt) != 0)
				say("adding the default route via %s: %s", p->gw, strerror(errno));
		}
	}
	close(sock);
	mkdir("/etc", 0755);
	if (p->dns) {
		char resolv[128];
		snprintf(resolv, sizeof resolv, "nameserver %s\n", p->dns);
		write_file("/etc/resolv.conf", resolv);
	}
}

/* ---- virtio-serial ports by name ---- */

struct ports {
	char results[256]; /* "vport0p1" or "" */
	char control[256];
};

/* Returns the number of ports whose name is not known yet (the host sends names asynchronously). */
static int scan_ports(struct ports *out)
{
	DIR *dir = opendir("/sys/class/virtio-ports");
	struct dirent *de;
	int unnamed = 0;
	if (!dir)
		return 0;
	while ((de = readdir(dir))) {
		char path[320], name[128];
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof path, "/sys/class/virtio-ports/%s/name", de->d_name);
		if (read_file(path, name, sizeof name) <= 0) {
			unnamed++;
			continue;
		}
		name[strcspn(name, "\n")] = '\0';
		if (strcmp(name, RESULTS_PORT) == 0)
			snprintf(out->results, sizeof out->results, "%s", de->d_name);
		else if (strcmp(name, CONTROL_PORT) == 0)
			snprintf(out->control, sizeof out->control, "%s", de->d_name);
	}
	closedir(dir);
	return unnamed;
}

static void find_ports(struct ports *out)
{
	/* Port names arrive over virtio-serial's control queue: while a port has none yet and ours
	 * are not both found, wait for them, at most ~100 ms. */
	for (int i = 0; i < 50; i++) {
		memset(out, 0, sizeof *out);
		if (scan_ports(out) == 0 || (out->results[0] && out->control[0]))
			break;
		struct timespec ts = {0, 2 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	if (out->results[0]) {
		char target[300];
		snprintf(target, sizeof target, "/dev/%s", out->results);
		unlink(RESULTS_DEVICE);
		if (symlink(target, RESULTS_DEVICE) != 0)
			say("symlink %s: %s", RESULTS_DEVICE, strerror(errno));
	}
}

/* ---- initramfs check ---- */

/*
 * The kernel unpacks the initramfs into a tmpfs root limited to half the RAM it has; when the
 * layers do not fit it logs "Initramfs unpacking failed" (only to its log under "quiet") and
 * boots on with part of the files. Say so in the user's terms before anything else fails.
 */
static int unpack_failed(void)
{
	int size = klogctl(10 /* SYSLOG_ACTION_SIZE_BUFFER */, NULL, 0);
	if (size <= 0)
		return 0;
	char *buf = malloc((size_t)size + 1);
	if (!buf)
		return 0;
	int n = klogctl(3 /* SYSLOG_ACTION_READ_ALL */, buf, size);
	buf[n > 0 ? n : 0] = 0;
	const char *hit = strstr(buf, "Initramfs unpacking failed");
	int failed = hit != NULL;
	if (failed) {
		struct statvfs vfs;
		unsigned long root_mib = 0;
		if (statvfs("/", &vfs) == 0)
			root_mib = (unsigned long)(vfs.f_blocks * vfs.f_frsize >> 20);
		size_t len = strcspn(hit, "\n");
		say("guest memory is too small for this image: the kernel could not unpack its layers "
		    "into the %luM RAM root it allows (half of what it has left) (%.*s); set "
		    "[resources] memory or -m higher",
		    root_mib, (int)len, hit);
	}
	free(buf);
	return failed;
}

/* ---- launch file ---- */

struct launch {
	char *argv[MAX_ARGS + 1];
	char *envp[MAX_ENV + 3];
	const char *workdir;
	const char *hostname;
	int argc, envc;
	char *data;
};

static int env_has(const struct launch *l, const char *name)
{
	size_t n = strlen(name);
	for (int i = 0; i < l->envc; i++)
		if (strncmp(l->envp[i], name, n) == 0 && l->envp[i][n] == '=')
			return 1;
	return 0;
}

static int load_launch(struct launch *l, const char *path)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) != 0) {
		say("cannot open %s: %s (was the launch archive appended as the last initrd?)", path,
		    strerror(errno));
		return -1;
	}
	l->data = malloc((size_t)st.st_size + 1);
	if (!l->data || read(fd, l->data, (size_t)st.st_size) != st.st_size) {
		say("cannot read %s", path);
		close(fd);
		return -1;
	}
	close(fd);
	l->data[st.st_size] = '\0';
	l->workdir = "/";
	l->hostname = "ukedge";
	char *p = l->data, *end = l->data + st.st_size;
	if (strcmp(p, LAUNCH_MAGIC) != 0) {
		say("%s does not start with %s", path, LAUNCH_MAGIC);
		return -1;
	}
	for (p += strlen(p) + 1; p < end; p += strlen(p) + 1) {
		if (strncmp(p, "arg=", 4) == 0 && l->argc < MAX_ARGS)
			l->argv[l->argc++] = p + 4;
		else if (strncmp(p, "env=", 4) == 0 && l->envc < MAX_ENV)
			l->envp[l->envc++] = p + 4;
		else if (strncmp(p, "workdir=", 8) == 0)
			l->workdir = p + 8;
		else if (strncmp(p, "hostname=", 9) == 0)
			l->hostname = p + 9;
		else if (*p)
			DEBUG("ignoring unknown launch record %.40s", p);
	}
	if (l->argc == 0) {
		say("%s names no program (no arg= record)", path);
		return -1;
	}
	if (!env_has(l, "PATH"))
		l->envp[l->envc++] = (char *)"PATH=" DEFAULT_PATH;
	if (!env_has(l, "HOME"))
		l->envp[l->envc++] = (char *)"HOME=/";
	l->argv[l->argc] = NULL;
	l->envp[l->envc] = NULL;
	return 0;
}

static const char *lookup_env(char *const envp[], const char *name)
{
	size_t n = strlen(name);
	for (; *envp; envp++)
		if (strncmp(*envp, name, n) == 0 && (*envp)[n] == '=')
			return *envp + n + 1;
	return NULL;
}

/* execvpe with the application's PATH (not init's); returns only on failure. */
static void exec_app(char *const argv[], char *const envp[])
{
	const char *file = argv[0];
	if (strchr(file, '/')) {
		execve(file, argv, envp);
		return;
	}
	const char *path = lookup_env(envp, "PATH");
	int saved = ENOENT;
	for (const char *dir = path; dir && *dir;) {
		const char *colon = strchr(dir, ':');
		size_t len = colon ? (size_t)(colon - dir) : strlen(dir);
		char full[4096];
		snprintf(full, sizeof full, "%.*s/%s", (int)len, len ? dir : ".", file);
		execve(full, argv, envp);
		if (errno != ENOENT && errno != ENOTDIR)
			saved = errno;
		dir = colon ? colon + 1 : dir + len;
	}
	errno = saved;
}

/* ---- main loop ---- */

static int open_inputs(int fds[MAX_INPUTS])
{
	int n = 0;
	DIR *dir = opendir("/dev/input");
	struct dirent *de;
	if (!dir)
		return 0;
	while ((de = readdir(dir)) && n < MAX_INPUTS) {
		char path[300];
		if (strncmp(de->d_name, "event", 5) != 0)
			continue;
		snprintf(path, sizeof path, "/dev/input/%s", de->d_name);
		int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
		if (fd >= 0)
			fds[n++] = fd;
	}
	closedir(dir);
	return n;
}

static int status_of(int wstatus)
{
	if (WIFEXITED(wstatus))
		return WEXITSTATUS(wstatus);
	if (WIFSIGNALED(wstatus))
		return 128 + WTERMSIG(wstatus);
	return 255;
}

static void request_stop(pid_t app, const char *why)
{
	DEBUG("stop requested (%s); sending SIGTERM to the application", why);
	kill(app, SIGTERM);
}

/*
 * Act on the lines the host wrote on the control port: "stop", "kill", and after the host
 * resumed this guest from a snapshot "time <unix seconds>" (the clock stood still in the
 * snapshot), "seed <hex>" (every clone of a snapshot starts with the same RNG state),
 * "mac <address>" and "hostname <name>" (the clone's own), then "resumed": the application's
 * process group gets RESUME_SIGNAL, so its runtime can reseed what it seeded from the kernel.
 */
/* Set by "resumed" while init holds before starting the application (app is 0 then). */
static int released;

static void read_control(int fd, pid_t app, char *buf, size_t *len, size_t size)
{
	ssize_t r;
	/* Edge-triggered: drain until EAGAIN (connected, empty) or 0 (host not connected). */
	while ((r = read(fd, buf + *len, size - 1 - *len)) > 0) {
		char *nl;
		*len += (size_t)r;
		buf[*len] = '\0';
		while ((nl = strchr(buf, '\n'))) {
			*nl = '\0';
			if (nl > buf && nl[-1] == '\r')
				nl[-1] = '\0';
			if (strcmp(buf, "stop") == 0 && app > 0)
				request_stop(app, "control port");
			else if (strcmp(buf, "stop") == 0)
				finish(128 + SIGTERM);
			else if (strcmp(buf, "kill") == 0 && app > 0)
				kill(app, SIGKILL);
			else if (strcmp(buf, "kill") == 0)
				finish(128 + SIGKILL);
			else if (strncmp(buf, "time ", 5) == 0)
				set_clock(buf + 5);
			else if (strncmp(buf, "seed ", 5) == 0)
				seed_from_hex(buf + 5);
			else if (strncmp(buf, "mac ", 4) == 0)
				set_mac(buf + 4);
			else if (strncmp(buf, "hostname ", 9) == 0)
				set_hostname(buf + 9);
			else if (strcmp(buf, "resumed") == 0 && app > 0)
				kill(-app, RESUME_SIGNAL);
			else if (strcmp(buf, "resumed") == 0)
				released = 1;
			else if (buf[0])
				say("unknown control command: %.60s", buf);
			size_t used = (size_t)(nl - buf) + 1;
			memmove(buf, nl + 1, *len - used + 1);
			*len -= used;
		}
		if (*len == size - 1)
			*len = 0; /* longer than any command: drop it */
	}
}

/*
 * ukedge.hold: say so on the console and wait, before the application exists, until the host
 * resumed this machine (from the snapshot a "pre-app" prewarm takes now) and said "resumed",
 * after giving it its own clock, entropy, MAC and hostname. The application then starts from
 * that state, as in a fresh boot.
 */
static void hold_for_resume(int control_fd)
{
	char ctl[256];
	size_t len = 0;
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.fd = control_fd};
	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, control_fd, &ev) != 0) {
		say("epoll: %s; starting the application without holding", strerror(errno));
		return;
	}
	(void)!write(console_fd, HELD_LINE "\n", strlen(HELD_LINE) + 1);
	tcdrain(console_fd);
	read_control(control_fd, 0, ctl, &len, sizeof ctl);
	while (!released) {
		struct epoll_event events[1];
		if (epoll_wait(ep, events, 1, -1) < 0 && errno != EINTR) {
			say("epoll_wait: %s; starting the application", strerror(errno));
			break;
		}
		read_control(control_fd, 0, ctl, &len, sizeof ctl);
	}
	close(ep);
}

/*
 * Wait for the application to end while forwarding stop requests. epoll rather than poll: a
 * virtio-serial port whose host side is not connected reports POLLHUP until it connects, which
 * would make poll() spin; edge-triggered epoll reports it once and wakes again on connect/data.
 */
static int supervise(pid_t app, int sfd, int control_fd)
{
	int inputs[MAX_INPUTS];
	int ninputs = open_inputs(inputs);
	char ctl[256];
	size_t ctl_len = 0;
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = {.events = EPOLLIN, .data.fd = sfd};
	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev) != 0) {
		say("epoll: %s", strerror(errno));
		return 255;
	}
	if (control_fd >= 0) {
		ev = (struct epoll_event){.events = EPOLLIN | EPOLLET, .data.fd = control_fd};
		if (epoll_ctl(ep, EPOLL_CTL_ADD, control_fd, &ev) != 0)
			say("watching the control port: %s", strerror(errno));
		read_control(control_fd, app, ctl, &ctl_len, sizeof ctl);
	}
	for (int i = 0; i < ninputs; i++) {
		ev = (struct epoll_event){.events = EPOLLIN, .data.fd = inputs[i]};
		epoll_ctl(ep, EPOLL_CTL_ADD, inputs[i], &ev);
	}
	for (;;) {
		struct epoll_event events[4 + MAX_INPUTS];
		int n = epoll_wait(ep, events, 4 + MAX_INPUTS, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			say("epoll_wait: %s", strerror(errno));
			return 255;
		}
		for (int k = 0; k < n; k++) {
			int fd = events[k].data.fd;
			if (fd == sfd) {
				struct signalfd_siginfo si;
				while (read(sfd, &si, sizeof si) == sizeof si) {
					if (si.ssi_signo != SIGCHLD) {
						kill(app, (int)si.ssi_signo);
						continue;
					}
					int wstatus;
					pid_t pid;
					while ((pid = waitpid(-1, &wstatus, WNOHANG)) > 0)
						if (pid == app)
							return status_of(wstatus);
				}
			} else if (fd == control_fd) {
				read_control(control_fd, app, ctl, &ctl_len, sizeof ctl);
			} else {
				struct kernel_input_event ie;
				while (read(fd, &ie, sizeof ie) == sizeof ie)
					if (ie.type == EV_KEY && ie.code == KEY_POWER && ie.value == 1)
						request_stop(app, "power button");
			}
		}
	}
}

#ifndef UKEDGE_INIT_SELFTEST
int main(void)
{
	struct params params = {0};
	struct launch launch;
	struct ports ports;
	sigset_t mask;

	if (getpid() != 1) {
		fprintf(stderr, "ukedge-init: must run as PID 1 inside a ukedge VM\n");
		return 2;
	}
	/* The kernel opened /dev/console as 0, 1, 2 from the initramfs skeleton. */
	console_fd = fcntl(2, F_GETFD) == -1 ? open("/dev/console", O_RDWR | O_NOCTTY) : 2;
	if (console_fd < 0)
		console_fd = 2;

	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);

	mount_all();
	parse_cmdline(&params, "/proc/cmdline");
	if (params.time)
		set_clock(params.time);
	seed_from_file(SEED_PATH);
	if (params.ro && mount_runtime(params.ro) != 0)
		finish(127);

	memset(&launch, 0, sizeof launch);
	/* The kernel's log is read only when the launch file is missing: reading it on every boot
	 * left the application's console output unseen (tests/cli/test_instance_cli.py). */
	if (load_launch(&launch, LAUNCH_PATH) != 0)
		finish(unpack_failed() ? UNPACK_FAILED_STATUS : 127);
	setup_network(&params);
	set_hostname(launch.hostname);
	find_ports(&ports);
	int control_fd = -1;
	if (ports.control[0]) {
		char path[300];
		snprintf(path, sizeof path, "/dev/%s", ports.control);
		control_fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
		if (control_fd < 0)
			say("open control port %s: %s", path, strerror(errno));
	}
	if (params.hold && control_fd >= 0)
		hold_for_resume(control_fd);
	else if (params.hold)
		say("ukedge.hold without a control port: starting the application at once");

	pid_t app = fork();
	if (app < 0) {
		say("fork: %s", strerror(errno));
		finish(255);
	}
	if (app == 0) {
		sigprocmask(SIG_UNBLOCK, &mask, NULL);
		setsid();
		int null = open("/dev/null", O_RDONLY);
		if (null >= 0 && null != 0) {
			dup2(null, 0);
			close(null);
		}
		if (chdir(launch.workdir) != 0) {
			say("chdir %s: %s", launch.workdir, strerror(errno));
			_exit(127);
		}
		exec_app(launch.argv, launch.envp);
		int e = errno;
		say("cannot run %s: %s", launch.argv[0], strerror(e));
		_exit(e == ENOENT ? 127 : 126);
	}
	finish(supervise(app, sfd, control_fd));
	return 0;
}
#else
/*
 * On the host, for tests: "constants" prints the contract's names; "exit N..." prints the exit
 * line for each N; "cmdline FILE" and "launch FILE" parse FILE as init does at boot and print
 * what it found, one "key=value" record per line (launch records end in NUL instead).
 */
static void show(const char *key, const char *value)
{
	if (value)
		printf("%s=%s\n", key, value);
}

int main(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "constants") == 0) {
		show("LAUNCH_PATH", LAUNCH_PATH);
		show("LAUNCH_MAGIC", LAUNCH_MAGIC);
		show("SEED_PATH", SEED_PATH);
		show("RESULTS_PORT", RESULTS_PORT);
		show("CONTROL_PORT", CONTROL_PORT);
		show("RESULTS_DEVICE", RESULTS_DEVICE);
		show("EXIT_PREFIX", EXIT_PREFIX);
		printf("RESUME_SIGNAL=%d\n", RESUME_SIGNAL);
		show("HELD_LINE", HELD_LINE);
		printf("UNPACK_FAILED_STATUS=%d\n", UNPACK_FAILED_STATUS);
		show("RUNTIME_MOUNT", RUNTIME_MOUNT);
		return 0;
	}
	if (argc >= 2 && strcmp(argv[1], "exit") == 0) {
		for (int i = 2; i < argc; i++) {
			char line[64];
			int n = format_exit(line, sizeof line, atoi(argv[i]));
			fwrite(line, 1, (size_t)n, stdout);
		}
		return 0;
	}
	if (argc == 3 && strcmp(argv[1], "cmdline") == 0) {
		struct params p = {0};
		parse_cmdline(&p, argv[2]);
		show("ip", p.ip);
		show("gw", p.gw);
		show("dns", p.dns);
		show("time", p.time);
		show("ro", p.ro);
		if (debug)
			show("debug", "1");
		if (p.hold)
			show("hold", "1");
		return 0;
	}
	if (argc == 3 && strcmp(argv[1], "launch") == 0) {
		static struct launch l;
		if (load_launch(&l, argv[2]) != 0)
			return 1;
		for (int i = 0; i < l.argc; i++)
			printf("arg=%s%c", l.argv[i], 0);
		for (int i = 0; i < l.envc; i++)
			printf("env=%s%c", l.envp[i], 0);
		printf("workdir=%s%chostname=%s%c", l.workdir, 0, l.hostname, 0);
		return 0;
	}
	fprintf(stderr, "usage: init-selftest constants | exit N... | cmdline FILE | launch FILE\n");
	return 2;
}
#endif
