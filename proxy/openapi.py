"""Print the proxy's OpenAPI document as YAML (the repository keeps it as ``openapi.yaml``).

python -m proxy.openapi > openapi.yaml
"""

import yaml
from fastapi import FastAPI

from proxy.app import create_app


def openapi_yaml(app: FastAPI | None = None) -> str:
    document = (app or create_app()).openapi()
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)


if __name__ == "__main__":
    print(openapi_yaml(), end="")
