"""Keys: the device's Ed25519 signing key, JWKs and compact JWS (RFC 7515 / RFC 8037).

The device signs every punch with its own key (:mod:`firmware_py.keys.store`);
the backend signs every command with its key.  Both sides use the same small
JWS implementation (:mod:`firmware_py.keys.jws`), and the tests check that
independent JOSE libraries (PyJWT, jwcrypto) agree with it.
"""
