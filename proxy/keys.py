"""Make an API key for the proxy.

    python -m proxy.keys clip            # M6's key
    python -m proxy.keys admin+clip      # an operator's key

Prints the key (give it to the client; it is not stored anywhere) and the line to append
to the file named by ``CLIPPING_PROXY_API_KEYS_FILE`` (only its digest).
"""

import argparse

from proxy.auth import digest, new_key, parse_scopes


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m proxy.keys",
        description="Make an API key and its line for CLIPPING_PROXY_API_KEYS_FILE.",
    )
    parser.add_argument("scopes", help="'clip', 'admin' or 'admin+clip'")
    scopes = parser.parse_args().scopes
    parse_scopes(scopes)
    key = new_key()
    print(f"key:  {key}")
    print(f"line: {scopes} {digest(key)}")


if __name__ == "__main__":
    main()
