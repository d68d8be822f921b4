"""Token routes (issue 11): an admin lists, creates and revokes named tokens over HTTP; the
secret is answered once and works at once; bad input is a 4xx naming the field."""

from __future__ import annotations

from gaffer.common.roles import Role
from httpapi import Http


async def test_create_list_use_and_revoke_a_token(http: Http):
    """POST creates a token whose secret then reads the API with its role; GET lists it
    without the secret; DELETE revokes it, after which it is refused."""
    admin = http.token()
    created = await http.request("POST", "/v1/tokens", admin, json={"name": "ci", "role": "viewer"})
    assert created.status == 201 and created.body["name"] == "ci" and created.body["secret"].startswith("gaffer_")
    secret = created.body["secret"]
    assert (await http.request("GET", "/v1/status", secret)).status == 200
    assert (await http.request("POST", "/v1/nodes/n1/cordon", secret)).status == 403
    listed = await http.request("GET", "/v1/tokens", admin)
    assert ("ci", "viewer") in [(t["name"], t["role"]) for t in listed.body["items"]]
    assert secret not in listed.text
    revoked = await http.request("DELETE", "/v1/tokens/ci", admin)
    assert revoked.status == 200 and revoked.body["revoked"] is True
    assert (await http.request("GET", "/v1/status", secret)).status == 401
    again = await http.request("DELETE", "/v1/tokens/ci", admin)
    assert again.status == 404


async def test_bad_token_requests_are_4xx_and_only_admins_manage_tokens(http: Http):
    """A bad role or name is a 400 naming the field; an operator may not list or create."""
    admin = http.token()
    for body, field in (({"name": "ci", "role": "root"}, "role"), ({"name": "a.b", "role": "viewer"}, "name"),
                        ({"name": "ci", "role": "viewer", "ttl": 1}, "ttl")):
        bad = await http.request("POST", "/v1/tokens", admin, json=body)
        assert bad.status == 400 and bad.body["field"] == field, body
    operator = http.token(Role.OPERATOR)
    assert (await http.request("GET", "/v1/tokens", operator)).status == 403
    assert (await http.request("POST", "/v1/tokens", operator, json={"name": "x", "role": "admin"})).status == 403
