// Package kmodtest proves the nsbroker kernel module's behaviour in a real
// kernel: echo answered by the caller's own namespace, multicast confined to
// the publisher's namespace, the kernel's own path across namespaces for
// privileged listeners, the result of every kind of malformed request, and
// the module's life cycle across namespace teardown, unload and reload.
//
// The tests speak the wire format of kmod/include/uapi/linux/nsbroker.h
// directly, independently of the project's Go mirror of the ABI, so that a
// mistake shared by the mirror and the module cannot hide. They are named
// TestIntegration* and run inside the test VM (make vmtest), where the module
// is loaded; elsewhere they skip.
package kmodtest
