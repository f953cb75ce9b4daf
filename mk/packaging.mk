# Packaging checks (deploy/ and kmod/dkms.conf); see deploy/README.md.
#
#   make dkms-check       dkms add, build and install kmod/ for real against the
#                         newest installed Debian cloud kernel's headers, check
#                         the installed module, then remove it all (root; the
#                         host cannot load it, the VM suites do)
#   make systemd-check    systemd-analyze verify of the nsbrokerd unit, and its
#                         exposure score under SYSTEMD_EXPOSURE_CEILING (tenths)
#   make packaging-check  both
#
# The Go tests of deploy/, cmd/nsbroker-cni and cmd/nsbroker-oci-hook (the
# DaemonSet decoded strictly, the unit's capabilities, the CNI and OCI hook
# flows) run with the other host tests.

PACKAGING_DIR := $(dir $(lastword $(MAKEFILE_LIST)))

.PHONY: dkms-check systemd-check packaging-check

dkms-check:
	@bash $(PACKAGING_DIR)dkms-check.sh

systemd-check:
	@bash $(PACKAGING_DIR)systemd-check.sh

packaging-check: systemd-check dkms-check
