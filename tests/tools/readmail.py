#!/usr/bin/python3
"""Prints one JSON line per message in a maildir's new/ folder, parsed with Python's own
email package (RFC 2047 subjects decoded, MIME parts walked), so that tests check what a
mail client would show rather than orch's own encoding."""
import email
import email.policy
import json
import os
import sys

folder = os.path.join(sys.argv[1], "new")
for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
    with open(os.path.join(folder, name), "rb") as f:
        msg = email.message_from_binary_file(f, policy=email.policy.default)
    parts = {}
    for part in msg.walk():
        if part.get_content_maintype() == "multipart":
            continue
        parts[part.get_content_type()] = part.get_content()
    print(json.dumps({
        "subject": str(msg["subject"]),
        "message_id": str(msg["message-id"]),
        "to": str(msg["to"]),
        "content_type": msg.get_content_type(),
        "parts": parts,
    }))
