"""Token auth on every RPC, names that cannot escape the served set, caps, bad tickets, TLS."""
from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.flight as flight
import pytest
from remote_server import TOKEN

import actlake
from actlake.schemas.errors import RemoteError
from actlake.schemas.stream import StreamSpec
from actlake.schemas.wire import StreamTicket, encode


def _auth(token: str | None) -> flight.FlightCallOptions:
    return flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {token}".encode())] if token else [],
                                    timeout=30)


def _every_rpc(client: flight.FlightClient, opts: flight.FlightCallOptions) -> dict[str, object]:
    """Call each Flight RPC once; name -> its result or the exception it raised."""
    ticket = flight.Ticket(encode(StreamTicket(dataset="acts", spec=StreamSpec(batch_size=16))))
    calls = {
        "list_flights": lambda: list(client.list_flights(options=opts)),
        "get_flight_info": lambda: client.get_flight_info(flight.FlightDescriptor.for_path("acts"), opts),
        "get_schema": lambda: client.get_schema(flight.FlightDescriptor.for_path("acts"), opts),
        "do_get": lambda: client.do_get(ticket, opts).read_all(),
        "do_action": lambda: list(client.do_action(flight.Action("info", encode({"dataset": "acts"})), opts)),
        "list_actions": lambda: client.list_actions(opts),
    }
    out: dict[str, object] = {}
    for name, call in calls.items():
        try:
            out[name] = call()
        except Exception as e:  # noqa: BLE001 - the test inspects it
            out[name] = e
    return out


def test_token_required_on_every_rpc(server):
    client = flight.FlightClient(f"grpc://127.0.0.1:{server.port}")
    for token in (None, "wrong", TOKEN[:-1], TOKEN + "x"):
        res = _every_rpc(client, _auth(token))
        # the gRPC status is UNAUTHENTICATED for each; pyarrow raises get_schema's as a plain OSError
        assert all(isinstance(r, Exception) and "Detail: Unauthenticated" in str(r) for r in res.values()), (token, res)
        assert all(isinstance(r, flight.FlightUnauthenticatedError) for k, r in res.items() if k != "get_schema")
    ok = _every_rpc(client, _auth(TOKEN))
    assert not any(isinstance(r, Exception) for r in ok.values()), ok
    assert ok["do_get"].num_rows == 622 - 622 % 16 and ok["get_schema"].schema.names == ["h", "g:input"]
    assert [f.descriptor.path for f in ok["list_flights"]] == [[b"acts"]]
    with pytest.raises(RemoteError):
        actlake.open_dataset(server.uri("acts"))  # no token
    with pytest.raises(RemoteError):
        actlake.open_dataset(server.uri("acts"), storage_options={"token": "wrong"})


def test_token_from_env_and_server_without_token(store, start_server, monkeypatch):
    srv = start_server([store], token=None)
    assert actlake.open_dataset(srv.uri("acts")).num_rows == 622
    tok = start_server([store], token="t0k")
    monkeypatch.setenv("ACTLAKE_TOKEN", "t0k")
    assert actlake.open_dataset(tok.uri("acts")).num_rows == 622


@pytest.mark.parametrize("name", ["../x", "a/b", "..", "%2e%2e", ".hidden", "/abs", "acts/../acts"])
def test_client_refuses_path_names(server, name):
    with pytest.raises(RemoteError):
        actlake.open_dataset(f"grpc://127.0.0.1:{server.port}/{name}", storage_options={"token": TOKEN})


def test_server_refuses_names_outside_the_served_set(server, store):
    """Raw tickets and actions (no client-side checks) naming paths are refused, nothing is opened."""
    client = flight.FlightClient(f"grpc://127.0.0.1:{server.port}")
    opts = _auth(TOKEN)
    spec = StreamSpec(batch_size=8).model_dump(mode="json")
    for name in ["../acts", store, "/etc", "acts/..", "acts2", "", "ACTS"]:
        raw = json.dumps({"v": 1, "kind": "stream", "dataset": name, "spec": spec}).encode()
        with pytest.raises(flight.FlightServerError):
            client.do_get(flight.Ticket(raw), opts).read_all()
        with pytest.raises(flight.FlightServerError):
            list(client.do_action(flight.Action("info", json.dumps({"v": 1, "dataset": name}).encode()), opts))
    for path in (["..", "acts"], [store], ["acts", "x"]):
        with pytest.raises(flight.FlightServerError):
            client.get_flight_info(flight.FlightDescriptor.for_path(*path), opts)
    stats = json.loads(list(client.do_action(flight.Action("stats", b""), opts))[0].body.to_pybytes())
    assert stats["datasets"] == ["acts"]


def test_bad_tickets_and_unknown_dataset(server):
    client = flight.FlightClient(f"grpc://127.0.0.1:{server.port}")
    opts = _auth(TOKEN)
    for raw in [b"garbage", b"{}", b'{"v": 2, "kind": "stream"}', b'{"v": 1, "kind": "nope", "dataset": "acts"}',
                json.dumps({"v": 1, "kind": "stream", "dataset": "acts", "spec": {"batch_size": -1}}).encode()]:
        with pytest.raises(flight.FlightServerError, match="bad ticket"):
            client.do_get(flight.Ticket(raw), opts).read_all()
    with pytest.raises(RemoteError, match="unknown dataset"):
        actlake.open_dataset(server.uri("missing"), storage_options={"token": TOKEN})


def test_caps_refuse_oversized_requests(store, start_server):
    srv = start_server([store, "--max-batch-rows", "100", "--max-buffer-rows", "256"])
    ds = actlake.open_dataset(srv.uri("acts"), storage_options={"token": TOKEN})
    assert len(list(ds.batches(100))) == 6
    with pytest.raises(RemoteError, match="max-batch-rows"):
        ds.batches(101)
    with pytest.raises(RemoteError, match="max-buffer-rows"):
        ds.batches(64, buffer_rows=1024)
    with pytest.raises(RemoteError, match="max-batch-rows"):
        ds.sample(101)


def test_tls(store, start_server, tmp_path):
    pytest.importorskip("cryptography")
    cert, key = _self_signed(tmp_path)
    srv = start_server([store, "--tls-cert", str(cert), "--tls-key", str(key)])
    ds = actlake.open_dataset(srv.uri("acts", "grpc+tls"), storage_options={"token": TOKEN, "tls_root_certs": str(cert)})
    assert len(list(ds.batches(64, seed=2))) == 622 // 64
    with pytest.raises(RemoteError):  # plaintext to a TLS server
        actlake.open_dataset(srv.uri("acts"), storage_options={"token": TOKEN, "timeout": 5})


def _self_signed(d):
    script = r"""
import datetime, ipaddress, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
key = ec.generate_private_key(ec.SECP256R1())
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
now = datetime.datetime.now(datetime.timezone.utc)
cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                       x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256()))
open(sys.argv[1], "wb").write(cert.public_bytes(serialization.Encoding.PEM))
open(sys.argv[2], "wb").write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
"""
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run([sys.executable, "-c", script, str(cert), str(key)], check=True)
    return cert, key
