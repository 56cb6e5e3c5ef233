"""The thin shell around the core: whatever touches the host.

Sockets (one multicast socket per interface and family), netlink and the interfaces (the only
netifaces user), the sinks and the map writer with state.json and the metrics file, the journal
and sd_notify (the only systemd-python user), the pid file, detaching, event handler processes,
inotify, the key file, the incarnation file, configuration files. It may import the core, never a
face (omdisc.daemon, omdisc.showmap, omdisc.cli).
"""
