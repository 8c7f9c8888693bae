"""Behaviour features out of Windows Security events as a SIEM or an export holds them (evtx JSON, or flat as
Splunk's Windows add-on, `XmlWinEventLog` or classic `WinEventLog` fields, Sentinel's `SecurityEvent` and NXLog give
them), and out of Microsoft Defender for Endpoint's device logons, drives mounted and files created. The same events
shipped as ECS (Winlogbeat, Elastic Agent) are read by `features`; the tables both read are here."""

from __future__ import annotations

from typing import Any, Final

from custodes.connectors import windows as win
from custodes.detections.scoring.observation import (
    ARRIVED,
    LEFT,
    Observation,
    copied,
    counting,
    name_key,
    name_of,
    normalise,
    on_machine,
)
from custodes.model import json_object

REMOTE_DESKTOP: Final = frozenset({"remoteinteractive", "10"})
"""A remote desktop logon: the person uses the machine, from another; whoever is physically at it is someone else."""
REMOTE_LOGONS: Final = frozenset({"network", "batch", "service", "networkcleartext", "3", "4", "5", "8"})
"""Windows logon types that put no one at the machine: a network logon (a file share, a remote call), a batch job,
a service, a clear-text network logon. An interactive, unlock, remote desktop or cached logon is someone there."""
WINDOWS_ADMIN: Final = {
    "4728": "privilege_grant",  # a member added to a security-enabled global group
    "4732": "privilege_grant",  # ... local group
    "4756": "privilege_grant",  # ... universal group
    "4724": "sensitive_api",  # another account's password reset
    "1102": "sensitive_api",  # the Security log cleared
    "4719": "sensitive_api",  # the system audit policy changed
    "4720": "sensitive_api",  # a user account created
    "4722": "sensitive_api",  # a user account enabled (a departed colleague's, say)
}
"""Windows Security events of administration, by event id: their account is the administrator who acted, and the
domain controller that logs them is no machine of the person's."""
LOGOFFS: Final = frozenset({"4634", "4647"})
"""A logoff, its own or the one the user started: the account left the machine."""
AT_THE_MACHINE: Final = frozenset({"4624", "4800", "4801"}) | LOGOFFS
"""A logon, a logoff (its own or the user's), the workstation locked or unlocked: the account was at the machine,
unless the logon type says it came over the network, as a batch job or a service."""
REFUSED: Final = frozenset({"4656", "5145"})
"""A handle to an object, a network share's file: as audit failures, access refused."""
REMOVABLE_STORAGE: Final = frozenset({"12804", "removable storage"})
"""The task (number, or name as Splunk's classic fields give it) of an object access on removable media."""
WRITES: Final = 0x2 | 0x4
"""`WriteData` and `AppendData` in an access mask: a file written."""
EXPLICIT_CREDENTIALS: Final = "4648"
"""A logon with credentials given explicitly (`runas`, a mapped drive with another user name): the subject acted
with the target account's credentials, sensitive when that account is another's."""
DEFENDER_LOGONS: Final = "AdvancedHunting-DeviceLogonEvents"
"""The category of Defender for Endpoint's device logons as its streaming API exports them (Event Hub, storage)."""
DEFENDER_DEVICE_EVENTS: Final = "AdvancedHunting-DeviceEvents"
"""The category of Defender for Endpoint's other device events (a USB drive mounted among them), exported so."""
DEFENDER_FILE_EVENTS: Final = "AdvancedHunting-DeviceFileEvents"
"""The category of Defender for Endpoint's file events (a file created among them), exported so."""
DEFENDER_CATEGORIES: Final = (DEFENDER_LOGONS, DEFENDER_DEVICE_EVENTS, DEFENDER_FILE_EVENTS)
"""The categories of Defender for Endpoint's rows `defender` reads, as its streaming API exports them."""
DEVICE_RECOGNISED: Final = "6416"
"""A new external device recognised by the system: logged by the system (the computer account), not by a person."""
STORAGE_CLASSES: Final = frozenset(
    {
        "diskdrive",
        "wpd",  # a portable device: a phone, a camera
        "cdrom",
        "{4d36e967-e325-11ce-bfc1-08002be10318}",  # the disk drives' class id
        "{eec5ad98-8080-425f-922a-dabf3de3f69a}",  # portable devices'
        "{4d36e965-e325-11ce-bfc1-08002be10318}",  # CD and DVD drives'
    }
)
"""The device classes (name or id) of a 6416 that can carry files away: a USB stick recognised is one disk drive, its
hub, controller and volume other classes, and a keyboard or mouse none of these."""
USB_MOUNTED: Final = frozenset({"UsbDriveMounted", "UsbDriveMount"})
"""Defender for Endpoint's `ActionType` of a USB drive mounted."""
FILE_CREATED: Final = "FileCreated"
"""Defender for Endpoint's `ActionType` of a file created (`DeviceFileEvents`): a copy to a drive mounted is one."""
REMOVABLE_FILE: Final = "RemovableStorageFileEvent"
"""Defender for Endpoint's `ActionType` of a file written to removable storage that a device control policy kept a
copy of (`DeviceEvents`)."""
PNP_CONNECTED: Final = "PnpDeviceConnected"
"""Defender for Endpoint's `ActionType` of a plug-and-play device connected (its class in `AdditionalFields`)."""
MOUNTLESS_CLASSES: Final = frozenset({"wpd", "{eec5ad98-8080-425f-922a-dabf3de3f69a}"})
"""The storage classes (name or id) of a plug-and-play device connected that Defender logs no drive mounted for: a
portable device (a phone, a camera) takes files over MTP without a drive letter. A stick's disk drive is counted by
its `UsbDriveMounted`, not a second time by its plug-and-play connection."""
SYSTEM_ACCOUNTS: Final = frozenset({"system", "localsystem", "local service", "network service"})
"""The accounts of Windows itself (`NT AUTHORITY\\SYSTEM`, ...), as a device event names them: nobody at the machine."""


def security(flat: dict[str, Any]) -> Observation | None:
    """A Windows Security event (flat fields, `windows.security_fields`): a logon, logoff, lock or unlock puts the
    person at the machine (not a network, batch or service logon); a refused logon (4625) is a failed sign-in; a
    file written to removable storage (4663, task Removable Storage) is a file copied to USB on the machine; an
    object or share refused is an access denied; another account's credentials used (4648) is sensitive;
    administration (`WINDOWS_ADMIN`: group memberships, password resets, accounts created or enabled, the log
    cleared, the audit policy changed) is the administrator's. None for any other event."""
    code = win.event_code(flat)
    name = win.security_actor(flat, code)
    if code == DEVICE_RECOGNISED:
        return recognised(name, flat.get("ClassName"), flat.get("ClassId"), win.computer(flat))
    if name is None:
        return None
    if code in AT_THE_MACHINE:
        return at_machine(name, win.computer(flat), win.logon_type(flat), code in LOGOFFS)
    if code == "4625":
        return counting(name, "signin_failed")
    failed = win.audit_failure(flat)
    if code == "4663" and not failed and removable_write(flat):
        return Observation(name, [("usb_files", 1.0)], [], win.computer(flat))
    if code in REFUSED and failed:
        return counting(name, "access_denied")
    if code == EXPLICIT_CREDENTIALS and not failed:
        other = win.target_account(flat)  # the account whose credentials were given
        return counting(name, "sensitive_api") if other is not None and name_key(other) != name_key(name) else None
    feature = WINDOWS_ADMIN.get(code)
    if feature is not None and not failed:
        return counting(name, feature)
    return None


def recognised(name: str | None, class_name: Any, class_id: Any, host: str | None) -> Observation | None:
    """A device recognised on `host` (6416): of a storage class (`STORAGE_CLASSES`), a removable media connection,
    by the account that registered it where that is a person's, else by whoever is at the machine."""
    classes = {str(value).strip().lower() for value in (class_name, class_id) if isinstance(value, str)}
    if not classes & STORAGE_CLASSES:
        return None
    return on_device(name, host, [("usb", 1.0)])


def on_device(account: str | None, host: str | None, features: list[tuple[str, float]]) -> Observation | None:
    """What happened on `host` (`features`: a removable drive connected, a file written to it): by `account` where
    that is a person's (`account_of`), else by whoever is at the machine."""
    person = account_of(account)
    return Observation(person, features, [], host) if person is not None else on_machine(host, features)


def account_of(name: str | None) -> str | None:
    """`name` where it is a person's account, not the machine's own (a computer account, `HOST$`) or Windows' own
    (`SYSTEM`, a local or network service)."""
    if name is None or name.strip().endswith("$") or normalise(name) in SYSTEM_ACCOUNTS:
        return None
    return name


def defender(row: dict[str, Any]) -> Observation | None:
    """A row of Microsoft Defender for Endpoint's advanced hunting (`DeviceLogonEvents`, `DeviceEvents`,
    `DeviceFileEvents`): a USB drive mounted (at its drive letter), or a portable device connected
    (`MOUNTLESS_CLASSES`), is a removable media connection on the device, by the account that started it where that
    is a person's, else by whoever is at the device; so is a file device control saw written to removable storage
    (`REMOVABLE_FILE`), a file written to removable media; a file created is read by `defender_file`, a logon by
    `defender_logon`."""
    action = row.get("ActionType")
    if action == FILE_CREATED:
        return defender_file(row)
    account, host = name_of(row.get("InitiatingProcessAccountName")), name_of(row.get("DeviceName"))
    if action == REMOVABLE_FILE:  # named by device control: no drive to look up
        return None if host is None else on_device(account, host, copied(row.get("FileSize")))
    if not isinstance(action, str) or (action not in USB_MOUNTED and action != PNP_CONNECTED):
        return defender_logon(row)
    fields = json_object(row.get("AdditionalFields")) or {}
    classes = {str(fields.get(name)).strip().lower() for name in ("ClassName", "ClassId")}
    if action == PNP_CONNECTED and not classes & MOUNTLESS_CLASSES:
        return None
    obs = on_device(account, host, [("usb", 1.0)])
    if obs is not None and action in USB_MOUNTED:
        obs.mounted = drive_of(fields.get("DriveLetter"))
    return obs


def defender_file(row: dict[str, Any]) -> Observation | None:
    """A file Defender for Endpoint saw created (`DeviceFileEvents`) on a drive other than the system's: a file
    written to removable media by the account whose process wrote it, where a USB drive was mounted at that drive on
    the device before (the engine knows: `Observation.written`); None for Windows' own accounts, as Microsoft's
    hunting query for files copied to USB drives leaves them out, and for a share's path."""
    drive = drive_of(row.get("FolderPath"))
    person = account_of(name_of(row.get("InitiatingProcessAccountName")))
    host = name_of(row.get("DeviceName"))
    if drive is None or person is None or host is None:
        return None
    return Observation(person, copied(row.get("FileSize")), [], host, written=drive)


def drive_of(path: Any) -> str | None:
    """The drive of a Windows path or drive letter (`E:\\plan.xlsx`, `E:` -> `e:`); None for the system drive
    (`c:`, never a removable one), a share's path (`\\\\server\\share`) or anything else."""
    if not isinstance(path, str) or len(path) < 2 or path[1] != ":" or not ("a" <= path[0].lower() <= "z"):
        return None
    drive = path[0].lower() + ":"
    return None if drive == "c:" else drive


def defender_logon(row: dict[str, Any]) -> Observation | None:
    """A row of Microsoft Defender for Endpoint's `DeviceLogonEvents` (advanced hunting, Sentinel, or the streaming
    API's `properties`): a logon puts the account at the device as a Windows logon does; a failed one is a failed
    sign-in; an attempt whose outcome is unknown counts nothing."""
    name = name_of(row.get("AccountName"))
    if name is None:
        return None
    action = row.get("ActionType")
    if action == "LogonFailed":
        return counting(name, "signin_failed")
    if action != "LogonSuccess":
        return None
    return at_machine(name, name_of(row.get("DeviceName")), str(row.get("LogonType") or ""))


def at_machine(name: str, host: str | None, kind: str, left: bool = False) -> Observation:
    """A logon (or logoff, `left`; lock, unlock) of `name` on `host`: the person there, unless its type (`kind`, a
    number or a name, `Remote interactive` or `RemoteInteractive`) says nobody sat at it; then only active. A remote
    desktop logon uses the machine but is no arrival at it (`Observation.presence`)."""
    kind = kind.replace(" ", "").lower()
    if host is None or kind in REMOTE_LOGONS:
        return Observation(name, [], [])
    return Observation(name, [], [("host", host)], host, presence(kind, left))


def presence(kind: str, left: bool) -> int:
    """What a logon of type `kind` (lower case, no spaces) that is not a remote one, or a logoff (`left`), says of
    the person's place (`Observation.presence`): arrived, left, or neither (a remote desktop: they are elsewhere)."""
    return LEFT if left else 0 if kind in REMOTE_DESKTOP else ARRIVED


def removable_write(flat: dict[str, Any]) -> bool:
    """Whether an object access (4663) wrote a file on removable storage: its task is Removable Storage (a number,
    or a name as Splunk's classic fields and Winlogbeat give it) and its mask holds `WriteData` or `AppendData`."""
    task = flat.get("Task", flat.get("TaskCategory"))
    return str(task).strip().lower() in REMOVABLE_STORAGE and bool(win.access_mask(flat) & WRITES)


def shipped_removable_write(shipped: Any) -> bool:
    """`removable_write` for a Windows event as Winlogbeat or Elastic Agent ship it (`winlog.task`, the mask in
    `winlog.event_data`)."""
    data = shipped_data(shipped)
    return data is not None and removable_write({**data, "Task": shipped.get("task")})


def shipped_recognised(shipped: Any, name: str | None, host: str | None) -> Observation | None:
    """`recognised` for a 6416 as Winlogbeat or Elastic Agent ship it (the class in `winlog.event_data`; `name` and
    `host` the document's `user.name` and `host.name`)."""
    data = shipped_data(shipped)
    if data is None:
        return None
    return recognised(name or name_of(data.get("SubjectUserName")), data.get("ClassName"), data.get("ClassId"), host)


def shipped_data(shipped: Any) -> dict[str, Any] | None:
    """The event's data of a Windows event as Winlogbeat or Elastic Agent ship it (`winlog.event_data`), if any."""
    data = shipped.get("event_data") if isinstance(shipped, dict) else None
    return data if isinstance(data, dict) else None
