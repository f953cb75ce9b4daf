/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _NSB_VERSION_H
#define _NSB_VERSION_H

/*
 * The module's release, the one place it is written: MODULE_VERSION uses
 * it, kmod/Makefile reads it for dkms-install, and `make -C kmod check`
 * and mk/dkms-check.sh fail when dkms.conf's PACKAGE_VERSION differs.
 * Not the ABI version: that is NSB_VERSION in the uapi header.
 */
#define NSB_MODULE_VERSION	"0.1"

#endif /* _NSB_VERSION_H */
