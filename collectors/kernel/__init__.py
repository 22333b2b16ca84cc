"""Node kernel-log collector: /dev/kmsg, dmesg/syslog/journal/pstore files -> kernel Events."""
