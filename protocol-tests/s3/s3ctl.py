#!/usr/bin/env python3
"""Test helper: bucket and object operations against the S3 server under test (moto)."""
import argparse
import hashlib
import sys

import boto3
from boto3.s3.transfer import TransferConfig


def main():
    p = argparse.ArgumentParser()
    p.add_argument("endpoint")
    sub = p.add_subparsers(dest="op", required=True)
    mk = sub.add_parser("mkbucket")
    mk.add_argument("bucket")
    put = sub.add_parser("put")
    put.add_argument("bucket")
    put.add_argument("key")
    put.add_argument("file")
    put.add_argument("--multipart", action="store_true", help="5 MiB parts: an ETag with a -N suffix")
    put.add_argument("--part-mb", type=int, default=5, help="multipart part size in MiB")
    put.add_argument("--md5-metadata", action="store_true", help="store md5sum metadata as the boot service does")
    put.add_argument("--md5sum", help="store this md5sum metadata, whatever the bytes are (a claim)")
    get = sub.add_parser("get")
    get.add_argument("bucket")
    get.add_argument("key")
    head = sub.add_parser("head", help="print the object's size")
    head.add_argument("bucket")
    head.add_argument("key")
    rng = sub.add_parser("time-range", help="GET the first BYTES bytes as one stream: print MB/s")
    rng.add_argument("bucket")
    rng.add_argument("key")
    rng.add_argument("bytes", type=int)
    rm = sub.add_parser("delete")
    rm.add_argument("bucket")
    rm.add_argument("key")
    a = p.parse_args()
    s3 = boto3.client(
        "s3",
        endpoint_url=a.endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )
    if a.op == "mkbucket":
        s3.create_bucket(Bucket=a.bucket)
    elif a.op == "put":
        extra = {}
        if a.md5_metadata:
            with open(a.file, "rb") as f:
                extra["Metadata"] = {"md5sum": hashlib.md5(f.read()).hexdigest()}
        if a.md5sum:
            extra["Metadata"] = {"md5sum": a.md5sum}
        part = a.part_mb * 1024 * 1024
        threshold = part if a.multipart else 1 << 40
        cfg = TransferConfig(multipart_threshold=threshold, multipart_chunksize=part)
        s3.upload_file(a.file, a.bucket, a.key, ExtraArgs=extra, Config=cfg)
        print(s3.head_object(Bucket=a.bucket, Key=a.key)["ETag"].strip('"'))
    elif a.op == "get":
        sys.stdout.buffer.write(s3.get_object(Bucket=a.bucket, Key=a.key)["Body"].read())
    elif a.op == "head":
        print(s3.head_object(Bucket=a.bucket, Key=a.key)["ContentLength"])
    elif a.op == "time-range":
        import time
        t0 = time.monotonic()
        body = s3.get_object(Bucket=a.bucket, Key=a.key, Range=f"bytes=0-{a.bytes - 1}")["Body"]
        got = 0
        for piece in body.iter_chunks(1 << 20):
            got += len(piece)
        print(f"{got / (time.monotonic() - t0) / 1e6:.1f}")
    elif a.op == "delete":
        s3.delete_object(Bucket=a.bucket, Key=a.key)


if __name__ == "__main__":
    main()
