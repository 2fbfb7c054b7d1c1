#!/usr/bin/env python3
"""What cloud-init makes of a cloud-config, read by PyYAML (cloud-init's own YAML reader),
for the keys edgeimg supports: tests/cloud_config_corpus.rs compares it with what edgeimg
renders and what the device's write_node_files writes.

Usage: expect.py FILE  ->  JSON on stdout. The meanings follow cloud-init's source
(cloudinit/config/cc_write_files.py: decode_perms, canonicalize_extraction, extract_contents;
cloudinit/subp.py shellify; cc_set_hostname / util.get_hostname_fqdn; cc_ntp), written out here
independently of edgeimg's Rust code.
"""
import base64
import gzip
import json
import sys

import yaml


def shellify(cmds):
    """cloudinit.subp.shellify, without its `#!/bin/sh` header."""
    out = ""
    for args in cmds:
        if isinstance(args, (list, tuple)):
            out += " ".join("'%s'" % str(a).replace("'", "'\\''") for a in args) + "\n"
        elif isinstance(args, str):
            out += args + "\n"
        else:
            raise TypeError("Unable to shellify type %r" % type(args).__name__)
    return out


def decode_perms(perm):
    if perm is None:
        return 0o644
    if isinstance(perm, int):
        return perm
    return int(perm, 8)


def extractions(enc):
    enc = (enc or "").lower().strip()
    if enc in ("gz", "gzip"):
        return ["gzip"]
    if enc in ("gz+base64", "gzip+base64", "gz+b64", "gzip+b64"):
        return ["base64", "gzip"]
    if enc in ("b64", "base64"):
        return ["base64"]
    return []


def contents(f):
    data = f.get("content", "")
    if data is None:
        data = ""
    for e in extractions(f.get("encoding")):
        if e == "base64":
            data = base64.b64decode(data)
        else:
            data = gzip.decompress(data if isinstance(data, bytes) else data.encode())
    return data if isinstance(data, bytes) else data.encode()


def main(path):
    with open(path, "rb") as fh:
        cfg = yaml.safe_load(fh) or {}
    out = {}
    host = cfg.get("hostname")
    if host is None and cfg.get("fqdn"):
        host = cfg["fqdn"].split(".")[0]
    out["hostname"] = host
    keys = list(cfg.get("ssh_authorized_keys") or [])
    users = cfg.get("users") or []
    for u in users if isinstance(users, list) else [users]:
        if isinstance(u, dict) and u.get("name") == "root":
            keys += u.get("ssh_authorized_keys") or u.get("ssh-authorized-keys") or []
    out["authorized_keys"] = keys
    files = []
    for f in cfg.get("write_files") or []:
        files.append(
            {
                "path": f["path"],
                "content_b64": base64.b64encode(contents(f)).decode(),
                "mode": decode_perms(f.get("permissions")),
                "owner": f.get("owner"),
                "append": bool(f.get("append", False)),
                "defer": bool(f.get("defer", False)),
            }
        )
    out["files"] = files
    # The files as they stand after a first boot: cloud-init writes the entries in order
    # (write_files), the deferred ones later (write_files_deferred); append opens with "ab".
    tree = {}
    for phase in (False, True):
        for f in files:
            if f["defer"] != phase:
                continue
            data = base64.b64decode(f["content_b64"])
            old = tree.get(f["path"], {}).get("data", b"") if f["append"] else b""
            tree[f["path"]] = {"data": old + data, "mode": f["mode"], "owner": f["owner"]}
    out["tree"] = {
        p: {"content_b64": base64.b64encode(v["data"]).decode(), "mode": v["mode"], "owner": v["owner"]}
        for p, v in tree.items()
    }
    out["runcmd"] = shellify(cfg.get("runcmd") or [])
    out["bootcmd"] = shellify(cfg.get("bootcmd") or [])
    out["timezone"] = cfg.get("timezone")
    ntp = cfg.get("ntp")
    servers = None
    if isinstance(ntp, dict) and ntp.get("enabled", True):
        servers = list(ntp.get("servers") or []) + list(ntp.get("pools") or [])
        servers = servers or None
    out["ntp"] = servers
    json.dump(out, sys.stdout, sort_keys=True)


if __name__ == "__main__":
    main(sys.argv[1])
