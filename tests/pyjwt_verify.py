#!/usr/bin/env python3
"""Verify a token with PyJWT from a JWKS URL alone (PyJWKClient), as a third
party would: `pyjwt_verify.py JWKS_URL ALG TOKEN`. Prints the verified
header and claims as one JSON object; exits non-zero when the token does not
verify. The identity tests (tests/tests/e2e/identity.rs) run it with the
venv's python (`make pyjwt`)."""
import json
import sys

import jwt


def main():
    url, alg, token = sys.argv[1:4]
    client = jwt.PyJWKClient(url, cache_keys=False, timeout=10)
    key = client.get_signing_key_from_jwt(token)
    claims = jwt.decode(token, key.key, algorithms=[alg],
                        options={"verify_aud": False, "verify_exp": False})
    header = jwt.get_unverified_header(token)
    print(json.dumps({"header": header, "claims": claims, "key_type": type(key.key).__name__}))


if __name__ == "__main__":
    main()
