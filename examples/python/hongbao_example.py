#!/usr/bin/env python3
"""A hongbao client in Python, generated from proto/ at run time (issue #15).

Against a cluster's routers it opens three wallets, sets the sender's payment PIN, tops the
sender up, sends a lucky packet, lets two users grab it, then grabs again with the first user and
reads the refusal the gRPC way: the `grpc-status-details-bin` trailer is a google.rpc.Status
whose details hold a hongbao.v1.ErrorDetail (as an Any) and a google.rpc.ErrorInfo.

What a client shows the cluster (docs/security.md):
  * mutual TLS: the cluster's CA (`ca.crt`) and a client certificate naming a service role,
    `certs/app.{crt,key}` for calls that act for a user, `certs/payment-gateway.{crt,key}` for
    the top-up;
  * `authorization: Bearer <JWT>` of the acting user. Tokens come from the login service; in a
    development cluster `hongbao login USER --device D` mints one with the dev key and saves it
    as `tokens/USER.jwt` beside the security folder, which is where this script reads it.

Usage (after `scripts/cluster up`; examples/python/run.sh does all of it):
  for u in 5001 5040 5070; do hongbao login $u --device py-$u; done
  python3 examples/python/hongbao_example.py --security-dir .cluster/security \
      --router 127.0.0.1:7001 --users 5001,5040,5070

Needs grpcio, grpcio-tools, grpcio-status, protobuf (examples/python/requirements.txt).
Exit status 0 when every step went as described, 1 otherwise.
"""

import argparse
import os
import secrets
import shutil
import sys
import tempfile
import time

import grpc
from grpc_status import rpc_status

HERE = os.path.dirname(os.path.abspath(__file__))
PIN = "135790"


def generate_stubs(proto_dir, out_dir):
    """protoc with the gRPC Python plugin (grpcio-tools), into out_dir; nothing is committed."""
    from grpc_tools import protoc
    import grpc_tools

    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{proto_dir}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        "hongbao/v1/api.proto",
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed on {proto_dir}/hongbao/v1/api.proto")
    sys.path.insert(0, out_dir)


def new_request_id():
    """16 bytes in the UUIDv7 layout: the first 48 bits are the current Unix time in ms (the
    ledger refuses ids outside its 24 h window: REQUEST_EXPIRED / REQUEST_AHEAD), then random
    bits with the version (7) and variant (0b10) set. One id per operation; a retry re-sends
    the same id and the cluster applies it at most once."""
    ms = time.time_ns() // 1_000_000
    b = bytearray(ms.to_bytes(6, "big") + secrets.token_bytes(10))
    b[6] = 0x70 | (b[6] & 0x0F)
    b[8] = 0x80 | (b[8] & 0x3F)
    return bytes(b)


def read(path):
    with open(path, "rb") as f:
        return f.read()


class Hongbao:
    """One TLS channel per service role to one router, and the users' tokens."""

    def __init__(self, api, api_grpc, security_dir, tokens_dir, router, timeout_s):
        self.api = api
        self.tokens_dir = tokens_dir
        self.timeout_s = timeout_s
        ca = read(os.path.join(security_dir, "ca.crt"))
        self.stubs = {}
        for role in ("app", "payment-gateway"):
            creds = grpc.ssl_channel_credentials(
                root_certificates=ca,
                private_key=read(os.path.join(security_dir, "certs", f"{role}.key")),
                certificate_chain=read(os.path.join(security_dir, "certs", f"{role}.crt")),
            )
            channel = grpc.secure_channel(router, creds)
            self.stubs[role] = (api_grpc.WalletStub(channel), api_grpc.PacketsStub(channel))

    def token(self, user):
        path = os.path.join(self.tokens_dir, f"{user}.jwt")
        try:
            return read(path).decode().strip()
        except FileNotFoundError:
            raise SystemExit(f"no token for user {user} ({path} missing): run `hongbao login {user} --device DEVICE` first")

    def call(self, role, service, method, request, user=None):
        """One RPC; re-sends the same request (same request id) while the answer says to try
        again (no leader yet, overloaded, timed out), for at most the timeout."""
        wallet, packets = self.stubs[role]
        rpc = getattr(wallet if service == "Wallet" else packets, method)
        metadata = [("authorization", f"Bearer {self.token(user)}")] if user is not None else []
        retryable = {
            self.api.ERROR_CODE_NOT_LEADER,
            self.api.ERROR_CODE_UNAVAILABLE,
            self.api.ERROR_CODE_OVERLOADED,
            self.api.ERROR_CODE_TIMEOUT,
            self.api.ERROR_CODE_RATE_LIMITED,
            # A slot move: nothing was done; the same request runs once the wallet is served.
            self.api.ERROR_CODE_SLOT_MOVING,
            self.api.ERROR_CODE_SLOT_MOVED,
        }
        give_up = time.monotonic() + self.timeout_s
        attempt = 0
        while True:
            attempt += 1
            try:
                reply, _call = rpc.with_call(request, metadata=metadata, timeout=max(0.5, give_up - time.monotonic()))
                return reply
            except grpc.RpcError as e:
                detail, _ = error_detail(self.api, e)
                if detail.code in retryable and time.monotonic() < give_up:
                    time.sleep(min(0.05 * attempt, 0.5))
                    continue
                raise


def error_detail(api, err):
    """The ErrorDetail and ErrorInfo of a failed call, from the grpc-status-details-bin trailer.
    A status without one (e.g. a proxy's UNAVAILABLE) reads as UNAVAILABLE / INTERNAL."""
    from google.rpc import error_details_pb2

    detail = api.ErrorDetail()
    info = None
    status = rpc_status.from_call(err)  # checks the trailer's code and message match the call's
    if status is not None:
        for any_ in status.details:
            if any_.Is(api.ErrorDetail.DESCRIPTOR):
                any_.Unpack(detail)
            elif any_.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                any_.Unpack(info)
    elif err.code() == grpc.StatusCode.UNAVAILABLE:
        detail.code = api.ERROR_CODE_UNAVAILABLE
    else:
        detail.code = api.ERROR_CODE_INTERNAL
    return detail, info


def yuan(cents):
    return f"{cents // 100}.{cents % 100:02d}"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--security-dir", required=True, help="CA, role certificates (the cluster's security/ folder)")
    p.add_argument("--router", required=True, help="a router's gRPC address, host:port")
    p.add_argument("--tokens-dir", help="where `hongbao login` saved the tokens (default: tokens/ beside the security folder)")
    p.add_argument("--users", default="5001,5040,5070", help="sender and two grabbers, comma separated")
    p.add_argument("--proto-dir", default=os.path.join(HERE, "..", "..", "proto"))
    p.add_argument("--timeout", type=float, default=15.0, help="seconds per call, retries included")
    a = p.parse_args()
    security = os.path.abspath(a.security_dir)
    tokens_dir = a.tokens_dir or os.path.join(os.path.dirname(security), "tokens")
    sender, alice, bob = (int(u) for u in a.users.split(","))

    out = tempfile.mkdtemp(prefix="hongbao-py-stubs-")
    try:
        generate_stubs(os.path.abspath(a.proto_dir), out)
        from hongbao.v1 import api_pb2 as api
        from hongbao.v1 import api_pb2_grpc as api_grpc

        try:
            return run(api, Hongbao(api, api_grpc, security, tokens_dir, a.router, a.timeout), sender, alice, bob)
        except grpc.RpcError as e:
            detail, _ = error_detail(api, e)
            print(f"FAIL: gRPC {e.code().name}: {api.ErrorCode.Name(detail.code)}: {detail.message or e.details()}")
            return 1
    finally:
        shutil.rmtree(out, ignore_errors=True)


def run(api, hb, sender, alice, bob):
    code_name = api.ErrorCode.Name

    # Wallets: as the app role, each with its own user's token. Re-running against the same
    # cluster finds them open (USER_EXISTS) and the PIN set (PIN_ALREADY_SET): both fine here.
    for user in (sender, alice, bob):
        try:
            r = hb.call("app", "Wallet", "OpenAccount", api.OpenAccountRequest(request_id=new_request_id(), user=user), user)
            print(f"opened wallet {user} on shard {r.shard}")
        except grpc.RpcError as e:
            d, _ = error_detail(api, e)
            if d.code != api.ERROR_CODE_USER_EXISTS:
                raise
            print(f"wallet {user} already open")
    try:
        hb.call("app", "Wallet", "SetPin", api.SetPinRequest(request_id=new_request_id(), user=sender, pin=PIN), sender)
        print(f"payment PIN set for {sender}")
    except grpc.RpcError as e:
        d, _ = error_detail(api, e)
        if d.code != api.ERROR_CODE_PIN_ALREADY_SET:
            raise
        print(f"payment PIN of {sender} already set")

    # Top-up: the payment gateway's role, no user token.
    r = hb.call("payment-gateway", "Wallet", "TopUp", api.TopUpRequest(request_id=new_request_id(), user=sender, amount_cents=2000))
    print(f"topped up {sender}: balance {yuan(r.balance_cents)}")

    sent = hb.call(
        "app",
        "Packets",
        "Send",
        api.SendPacketRequest(
            request_id=new_request_id(),
            sender=sender,
            kind=api.PACKET_KIND_LUCKY,
            total_cents=1000,
            count=3,
            greeting="恭喜發財 from Python",
            pin=PIN,
        ),
        sender,
    )
    print(f"sent lucky packet {sent.packet_id}: 10.00 in 3 shares, sender balance {yuan(sent.balance_cents)}")

    for user in (alice, bob):
        g = hb.call("app", "Packets", "Grab", api.GrabRequest(request_id=new_request_id(), packet_id=sent.packet_id, packet_key=sent.packet_key, grabber=user), user)
        print(f"{user} grabbed {yuan(g.amount_cents)} (share {g.index}, {g.remaining_count} left, credit in flight: {g.credit_in_flight})")

    view = hb.call("app", "Packets", "Show", api.ShowPacketRequest(packet_id=sent.packet_id, packet_key=sent.packet_key), alice)
    if sorted(c.grabber for c in view.claims) != sorted([alice, bob]) or view.remaining_count != 1:
        print(f"FAIL: packet shows claims {[c.grabber for c in view.claims]}, {view.remaining_count} left")
        return 1

    # The same user again: refused, and the trailer says exactly why.
    try:
        hb.call("app", "Packets", "Grab", api.GrabRequest(request_id=new_request_id(), packet_id=sent.packet_id, packet_key=sent.packet_key, grabber=alice), alice)
        print("FAIL: a second grab by the same user was accepted")
        return 1
    except grpc.RpcError as e:
        detail, info = error_detail(api, e)
        print(f"second grab by {alice}: gRPC {e.code().name}, ErrorDetail code {code_name(detail.code)} (shard {detail.shard})")
        print(f"  message: {detail.message}")
        if info is not None:
            print(f"  ErrorInfo: reason {info.reason}, domain {info.domain}")
        expected = api.ERROR_CODE_ALREADY_GRABBED
        if detail.code != expected:
            print(f"FAIL: expected {code_name(expected)}, got {code_name(detail.code)}")
            return 1
        if info is None or info.reason != code_name(expected).removeprefix("ERROR_CODE_") or info.domain != "hongbao":
            print(f"FAIL: expected ErrorInfo reason {code_name(expected).removeprefix('ERROR_CODE_')} domain hongbao, got {info}")
            return 1
        if not detail.message:
            print("FAIL: the ErrorDetail has no message")
            return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
