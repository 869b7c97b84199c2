"""`simple-wallet`: Avalon's wallet workload (deposit, withdraw, transfer) on a ledger kept in
a folder of the worker's own.

From hyperledger/avalon `examples/apps/simple_wallet/workload/` (`simple_wallet_logic.cpp`,
`simple_wallet_execute_io.cpp`, `simple_wallet_plug-in.cpp`, commit cf762fd, Apache-2.0). Each
input item is one of

    deposit <account> <amount>
    withdraw <account> <amount>
    transfer <debitor> <creditor> <amount>

and gets an output item of its own, `WALLET RESULT: alice::150` (a transfer:
`WALLET RESULT: alice::50,bob::150`) or one of Avalon's texts for a refusal
(`No wallet details found`, `Deposit amount should be a positive value`, ...), byte for byte
as Avalon's worker answers, quirks included: amounts are read as `std::stoi` reads them ("5abc"
is 5) and a new wallet keeps the amount's text as given; balances are 32-bit ints that wrap
around; an account name with dots is a path into nested wallets, as the `parson` JSON calls
Avalon uses read and write it; a transfer from an account to itself credits it.

Where we differ on purpose: Avalon kept the ledger in one enclave's memory and a file in /tmp
encrypted under a key that died with the enclave, so its wallets were lost at every restart and
not shared by the enclaves of a pool. Here the ledger is `ledger.json` in
`<state dir>/workloads/simple-wallet/` (the state directory's protection: mode 0700, or the
encrypted mount under Gramine-SGX), shared by every worker process under a lock, and kept across
restarts. An order's items are applied in index order; if one cannot be stored, the order fails
(error 1) and the items before it stay applied, as in Avalon. Account names are at most 256
bytes and the ledger at most 1 MiB.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..base import Workload, WorkloadFailure
from ._cpp_text import StoiError, int32, stoi, to_string, tokens
from ._folder import WorkloadFolder, read_file, replace_file

LEDGER_NAME = "ledger.json"
MAX_ACCOUNT_BYTES = 256
MAX_LEDGER_BYTES = 1 << 20

INSUFFICIENT = b"Insufficient arguments supplied to perform wallet operation"


def _valid_amount(text: bytes) -> bool:
    """`SimpleWalletLogic::IsValidAmount`: std::stoi reads a number above 0."""
    try:
        return stoi(text) > 0
    except StoiError:  # the C++ catches whatever stoi throws
        return False


def _key(name: bytes) -> str:
    # JSON keys are text; parson keeps any bytes in a name, so they round-trip through
    # surrogate escapes.
    return name.decode("utf-8", "surrogateescape")


def _get(ledger: dict[str, Any], account: bytes) -> bytes:
    """parson's `json_object_dotget_string`: a dotted name is a path through nested objects;
    anything but a string at its end reads as no wallet (b"")."""
    node: Any = ledger
    *path, last = _key(account).split(".")
    for part in path:
        node = node.get(part) if isinstance(node, dict) else None
    value = node.get(last) if isinstance(node, dict) else None
    return value.encode("utf-8") if isinstance(value, str) else b""


def _set(ledger: dict[str, Any], account: bytes, amount: bytes) -> bool:
    """parson's `json_object_dotset_string`: False where it fails (a path through a value that
    is not an object, or an amount that is not UTF-8)."""
    try:
        value = amount.decode("utf-8")
    except UnicodeDecodeError:
        return False
    node = ledger
    *path, last = _key(account).split(".")
    for part in path:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            return False
        node = child
    node[last] = value
    return True


class _Ledger:
    """The ledger for one order: read under the lock, changed in memory, saved once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        data = read_file(path)
        try:
            self.accounts: dict[str, Any] = json.loads(data) if data else {}
        except ValueError:
            raise WorkloadFailure("simple-wallet's ledger is unreadable") from None
        self.changed = False

    def balance(self, account: bytes) -> bytes:
        return _get(self.accounts, account)

    def update(self, account: bytes, amount: bytes) -> bytes:
        """`UpdateWalletBalance`: the amount stored, which is what the answer shows."""
        if len(account) > MAX_ACCOUNT_BYTES:
            raise WorkloadFailure(f"simple-wallet account names are at most {MAX_ACCOUNT_BYTES} bytes")
        if not _set(self.accounts, account, amount):
            raise WorkloadFailure("simple-wallet could not store this wallet in its ledger "
                                  "(a dotted account name runs through a wallet, or an amount is not UTF-8)")
        self.changed = True
        return amount

    def save(self) -> None:
        if not self.changed:
            return
        data = json.dumps(self.accounts, separators=(",", ":")).encode("ascii")
        if len(data) > MAX_LEDGER_BYTES:
            raise WorkloadFailure(f"simple-wallet's ledger is full ({MAX_LEDGER_BYTES} bytes)")
        try:
            replace_file(self.path, data)
        except OSError:
            raise WorkloadFailure("simple-wallet cannot write its ledger") from None
        self.changed = False


def _deposit(ledger: _Ledger, account: bytes, amount: bytes) -> bytes:
    balance = ledger.balance(account)
    if not balance:
        return account + b"::" + ledger.update(account, amount)
    return account + b"::" + ledger.update(account, to_string(int32(stoi(balance) + stoi(amount))))


def _withdraw(ledger: _Ledger, account: bytes, amount: bytes) -> bytes:
    balance = ledger.balance(account)
    if not balance:
        return b"No wallet details found"
    if stoi(balance) < stoi(amount):
        return b"No sufficient balance to withdraw. Available balance: " + balance
    return account + b"::" + ledger.update(account, to_string(int32(stoi(balance) - stoi(amount))))


def _transfer(ledger: _Ledger, debitor: bytes, creditor: bytes, amount: bytes) -> bytes:
    debit = ledger.balance(debitor)
    if not debit:
        return b"Debitor wallet not found"
    if stoi(debit) < stoi(amount):
        return b"No sufficient balance in debitor's account"
    credit = ledger.balance(creditor)
    if not credit:
        return b"Creditor wallet not found"
    # Both balances were read before either is written: a transfer to oneself credits.
    new_debit = to_string(int32(stoi(debit) - stoi(amount)))
    new_credit = to_string(int32(stoi(credit) + stoi(amount)))
    debited = ledger.update(debitor, new_debit)
    credited = ledger.update(creditor, new_credit)
    return debitor + b"::" + debited + b"," + creditor + b"::" + credited


# command: (number of words, message for an amount that is not above 0, handler)
_COMMANDS: dict[bytes, tuple[int, bytes, Any]] = {
    b"deposit": (3, b"Deposit amount should be a positive value", _deposit),
    b"withdraw": (3, b"Withdraw amount should be a positive value", _withdraw),
    b"transfer": (4, b"Transfer amount should be a positive value", _transfer),
}


def process(ledger: _Ledger, text: bytes) -> bytes:
    """`SimpleWalletLogic::ProcessWalletRequest` for one input item."""
    words = tokens(text)
    if not words:
        return b"WALLET RESULT: " + INSUFFICIENT
    command = _COMMANDS.get(words[0])
    if command is None:
        return b"WALLET RESULT: "
    count, not_positive, handler = command
    if len(words) != count:
        outcome = INSUFFICIENT
    elif not _valid_amount(words[-1]):
        outcome = not_positive
    else:
        outcome = handler(ledger, *words[1:])
    return b"WALLET RESULT: " + outcome


class SimpleWalletWorkload(Workload):
    """Avalon's simple wallet, one output item per input item."""

    uses_data_dir = True

    def __init__(self, data_dir: Path | None) -> None:
        self.folder = WorkloadFolder(data_dir, "simple-wallet")

    def run(self, inputs: Sequence[bytes]) -> list[bytes]:
        with self.folder.locked() as folder:
            ledger = _Ledger(folder / LEDGER_NAME)
            results = []
            try:
                for text in inputs:
                    results.append(process(ledger, text))
            finally:
                ledger.save()  # what earlier items did stays, as in Avalon, even if a later one fails
            return results
