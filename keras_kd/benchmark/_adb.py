"""Driving `adb`: finding it, running its commands with their output kept for errors, choosing the device."""

import os
import shlex
import shutil
import subprocess

from keras_kd.benchmark._result import AndroidBenchmarkError, output_tail

_ADB_HINT = (
    "Install the Android SDK platform-tools (https://developer.android.com/tools/releases/platform-tools, "
    "or `sudo apt-get install adb` / `brew install android-platform-tools`) and put `adb` on PATH, "
    "or pass adb='/path/to/platform-tools/adb'."
)


def resolve_adb(adb):
    adb = os.fspath(adb)
    if os.path.dirname(adb):
        if os.path.isfile(adb) and os.access(adb, os.X_OK):
            return os.path.abspath(adb)
        raise FileNotFoundError(f"adb={adb!r} is not an executable file. {_ADB_HINT}")
    found = shutil.which(adb)
    if found is None:
        raise FileNotFoundError(f"Could not find {adb!r} on PATH. {_ADB_HINT}")
    return found


class Adb:
    """Runs adb commands against one device and keeps their output for error messages."""

    def __init__(self, executable, timeout):
        self.executable = executable
        self.timeout = timeout
        self.serial = None

    def run(self, *args, check=True, timeout=None):
        command = [self.executable]
        if self.serial is not None:
            command += ["-s", self.serial]
        command += [str(a) for a in args]
        try:
            completed = subprocess.run(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=timeout or self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            output = (error.output or b"").decode("utf-8", errors="replace")
            raise AndroidBenchmarkError(
                f"`{shlex.join(command)}` did not finish within {timeout or self.timeout} s. Raise timeout= or "
                f"lower num_runs=. Output so far:\n{output_tail(output)}"
            ) from None
        output = completed.stdout.decode("utf-8", errors="replace")
        if check and completed.returncode != 0:
            raise AndroidBenchmarkError(
                f"`{shlex.join(command)}` failed with exit status {completed.returncode}. Output:\n{output_tail(output)}"
            )
        return completed.returncode, output

    def shell(self, command, check=True, timeout=None):
        return self.run("shell", command, check=check, timeout=timeout)


def parse_adb_devices(output):
    devices = []
    for line in output.splitlines():
        line = line.strip()
        if not line or line.startswith(("List of devices", "*", "adb server", "daemon")):
            continue
        parts = line.split(None, 1)
        if len(parts) == 2:
            state = parts[1].split(" usb:")[0].split(" product:")[0].strip()
            devices.append((parts[0], state))
    return devices


_STATE_HINTS = {
    "unauthorized": "unlock the phone and accept the 'Allow USB debugging?' prompt (then run `adb devices` again)",
    "offline": "reconnect the cable or run `adb kill-server && adb start-server`",
    "no permissions": "fix the udev rules (Linux: add your user to the plugdev group) and reconnect",
}


def _state_hint(state):
    for key, hint in _STATE_HINTS.items():
        if state.startswith(key):
            return hint
    return "wait until it is fully booted and shows as 'device' in `adb devices`"


def select_device(devices, serial):
    listing = ", ".join(f"{s} ({state})" for s, state in devices) or "none"
    if serial is not None:
        for candidate, state in devices:
            if candidate == serial:
                if state != "device":
                    raise AndroidBenchmarkError(f"Device {serial!r} is {state!r}: {_state_hint(state)}.")
                return serial
        raise AndroidBenchmarkError(f"No device with serial {serial!r} is attached. `adb devices` lists: {listing}.")
    ready = [s for s, state in devices if state == "device"]
    if len(ready) == 1:
        return ready[0]
    if len(ready) > 1:
        raise AndroidBenchmarkError(
            f"Several devices are attached ({listing}); pass serial= with one of: {', '.join(ready)}."
        )
    if devices:
        details = "; ".join(f"{s} is {state!r}: {_state_hint(state)}" for s, state in devices)
        raise AndroidBenchmarkError(f"No usable Android device: {details}.")
    raise AndroidBenchmarkError(
        "No Android device is attached (`adb devices` lists none). Connect a phone with USB debugging enabled "
        "(Settings > About phone > tap 'Build number' 7 times, then Developer options > USB debugging) "
        "or start an emulator, and check that `adb devices` shows it as 'device'."
    )


def connect(adb, timeout, serial):
    """An `Adb` bound to the one usable device: `serial`, else $ANDROID_SERIAL, else the only one attached."""
    adb_runner = Adb(resolve_adb(adb), timeout)
    if serial is None:
        serial = os.environ.get("ANDROID_SERIAL") or None
    _, listing = adb_runner.run("devices")
    adb_runner.serial = select_device(parse_adb_devices(listing), serial)
    return adb_runner
