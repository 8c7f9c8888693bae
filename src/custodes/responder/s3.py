"""The boto3 S3 client of the evidence bucket and of session recordings."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config as BotoConfig

from custodes.config import S3Connection


def s3_client(config: S3Connection) -> Any:
    """A boto3 S3 client (credentials from references, else the AWS default chain)."""
    keys: dict[str, str] = {}
    if config.access_key_id is not None and config.secret_access_key is not None:
        keys = {
            "aws_access_key_id": config.access_key_id.reveal(),
            "aws_secret_access_key": config.secret_access_key.reveal(),
        }
    return boto3.client(
        "s3",
        region_name=config.region,
        endpoint_url=config.endpoint_url,
        config=BotoConfig(retries={"mode": "standard", "max_attempts": 4}),
        **keys,
    )
