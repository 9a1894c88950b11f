#!/usr/bin/env python3
"""Receive messages from an MNS queue and print them as JSON lines, with their
message properties: a small, independent consumer written from the MNS HTTP API
docs with the Python 3 standard library only (http.client, xml.etree, hmac).

It is what a consumer that cannot use an SDK with property support (the
official Python SDK on GitHub, 1.2.2, does not parse UserProperties) does:

  GET /queues/<q>/messages?numOfMessages=16&waitseconds=1   (BatchReceiveMessage, V2 signature)
  DELETE /queues/<q>/messages?ReceiptHandle=<rh>            (after printing)

Usage:
  MNS_ACCESS_KEY_ID=... MNS_ACCESS_KEY_SECRET=... [MNS_SECURITY_TOKEN=...] \\
    scripts/mns-receive.py --endpoint https://ACCOUNT.mns.REGION.aliyuncs.com --queue NAME [--max N] [--raw] [--keep]

Each line: {"messageId", "body" (base64-decoded unless --raw; as text, or
"bodyBase64" when it is not UTF-8), "messageGroupId", "userProperties":
{name: {"value", "type"}}, "systemProperties": {...}}. MessageBodyMD5 is
checked against the body text. It stops after --max messages, or when the
queue has had nothing for two polls. Exit 1 on an MNS error, naming it.
"""
import argparse
import base64
import email.utils
import hashlib
import hmac
import http.client
import json
import os
import sys
import urllib.parse
import xml.etree.ElementTree as ET

VERSION = "2015-06-06"


def local(tag):
    return tag.rsplit("}", 1)[-1]


def child_text(elem, name):
    for c in elem:
        if local(c.tag) == name:
            return c.text or ""
    return None


def props(elem, list_name, item_name):
    out = {}
    for c in elem:
        if local(c.tag) != list_name:
            continue
        for p in c:
            if local(p.tag) != item_name:
                continue
            name = child_text(p, "Name")
            out[name] = {"value": child_text(p, "Value") or "", "type": child_text(p, "Type")}
    return out


class MNS:
    def __init__(self, endpoint, ak, sk, token):
        u = urllib.parse.urlsplit(endpoint)
        self.https = u.scheme == "https"
        self.host = u.netloc
        self.ak, self.sk, self.token = ak, sk, token

    def request(self, method, resource):
        """resource is the path plus the query exactly as sent (V2 signs it so)."""
        date = email.utils.formatdate(usegmt=True)
        headers = {"Date": date, "x-mns-version": VERSION, "Host": self.host,
                   "User-Agent": "mns-receive.py (python3 stdlib)"}
        canon = "x-mns-version:" + VERSION + "\n"
        sts = method + "\n" + "" + "\n" + "" + "\n" + date + "\n" + canon + resource
        sig = base64.b64encode(hmac.new(self.sk.encode(), sts.encode(), hashlib.sha1).digest()).decode()
        headers["Authorization"] = "MNS " + self.ak + ":" + sig
        if self.token:
            headers["security-token"] = self.token
        conn = (http.client.HTTPSConnection if self.https else http.client.HTTPConnection)(self.host, timeout=40)
        try:
            conn.request(method, resource, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.getheader("x-mns-request-id", ""), resp.read()
        finally:
            conn.close()


def mns_error(status, req_id, data):
    try:
        root = ET.fromstring(data)
        return "%s (HTTP %d): %s [request id %s]" % (child_text(root, "Code"), status, child_text(root, "Message"), req_id)
    except ET.ParseError:
        return "HTTP %d: %r" % (status, data[:200])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--queue", required=True)
    ap.add_argument("--max", type=int, default=0, help="stop after this many messages (0: until the queue is empty)")
    ap.add_argument("--raw", action="store_true", help="print MessageBody as stored (no base64 decoding)")
    ap.add_argument("--keep", action="store_true", help="do not delete the messages received")
    a = ap.parse_args()
    ak, sk = os.environ.get("MNS_ACCESS_KEY_ID", ""), os.environ.get("MNS_ACCESS_KEY_SECRET", "")
    if not ak or not sk:
        sys.exit("set MNS_ACCESS_KEY_ID and MNS_ACCESS_KEY_SECRET")
    mns = MNS(a.endpoint, ak, sk, os.environ.get("MNS_SECURITY_TOKEN", ""))
    got, empty = 0, 0
    while (a.max == 0 or got < a.max) and empty < 2:
        n = 16 if a.max == 0 else min(16, a.max - got)
        status, req_id, data = mns.request("GET", "/queues/%s/messages?numOfMessages=%d&waitseconds=1" % (a.queue, n))
        if status == 404 and b"MessageNotExist" in data:
            empty += 1
            continue
        if status != 200:
            print("mns-receive: BatchReceiveMessage queue %s: %s" % (a.queue, mns_error(status, req_id, data)), file=sys.stderr)
            return 1
        empty = 0
        root = ET.fromstring(data)
        msgs = [root] if local(root.tag) == "Message" else [m for m in root if local(m.tag) == "Message"]
        for m in msgs:
            text = child_text(m, "MessageBody") or ""
            md5 = hashlib.md5(text.encode()).hexdigest().upper()
            if md5 != (child_text(m, "MessageBodyMD5") or "").upper():
                print("mns-receive: message %s: MessageBodyMD5 %s is not the MD5 of the body (%s)" % (child_text(m, "MessageId"), child_text(m, "MessageBodyMD5"), md5), file=sys.stderr)
                return 1
            out = {"messageId": child_text(m, "MessageId")}
            if a.raw:
                out["body"] = text
            else:
                raw = base64.b64decode(text, validate=True)
                try:
                    out["body"] = raw.decode("utf-8")
                except UnicodeDecodeError:
                    out["bodyBase64"] = text
            out["messageGroupId"] = child_text(m, "MessageGroupId")
            out["userProperties"] = props(m, "UserProperties", "PropertyValue")
            out["systemProperties"] = props(m, "SystemProperties", "SystemPropertyValue")
            print(json.dumps(out, ensure_ascii=False, sort_keys=True))
            got += 1
            if not a.keep:
                rh = urllib.parse.quote(child_text(m, "ReceiptHandle") or "", safe="")
                status, req_id, data = mns.request("DELETE", "/queues/%s/messages?ReceiptHandle=%s" % (a.queue, rh))
                if status != 204:
                    print("mns-receive: DeleteMessage: %s" % mns_error(status, req_id, data), file=sys.stderr)
                    return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
