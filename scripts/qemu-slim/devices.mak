# The devices a ukedge x86_64 node's guests use, and nothing else (configure
# --without-default-devices --with-devices-x86_64=ukedge): the pc machine (i440FX, its ISA serial
# port for the console) and microvm, with the virtio devices vmm/_qemu_argv.py adds (net,
# serial ports, rng, the shared runtime on pmem or blk, the balloon). What a board selects
# itself (PIT, RTC, fw_cfg, PCI host) comes with it.
CONFIG_I440FX=y
CONFIG_MICROVM=y
CONFIG_SERIAL_ISA=y
CONFIG_VIRTIO_PCI=y
CONFIG_VIRTIO_MMIO=y
CONFIG_VIRTIO_NET=y
CONFIG_VIRTIO_SERIAL=y
CONFIG_VIRTIO_RNG=y
CONFIG_VIRTIO_PMEM=y
CONFIG_VIRTIO_BLK=y
CONFIG_VIRTIO_BALLOON=y
