"""Option values converted without pydantic, where that is plain.

Typer (0.29) converts every option's value through a pydantic ``TypeAdapter``, built when the
value is processed, even for an option that was not given: each ``mltidy`` command imported
pydantic and built some twenty adapters, about 0.2 s of CPU before any work, more than a scan of
100,000 runs costs above the database's own query (``bench/scan_speed.py``).

mltidy's options are strings, lists of strings, whole numbers, enums and paths. :func:`lighten`
gives each such option a converter that handles the values that are plainly right (a string; a
number within bounds; an enum's value, in any case where the option allows it; a path that
Typer would not check) and hands anything else (a checked path, a bad value) to Typer's own
converter, built then: so Typer's checks and error messages hold unchanged, and pydantic is
imported only for them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, get_args, get_origin

try:  # Typer's internals: where they are not as expected, Typer converts as it always did
    from typer._coercion import RuntimeParam, TypeDescriptor, build_runtime_param
    from typer._param_types import coerce_cli_choice
except ImportError:  # pragma: no cover - another Typer
    RuntimeParam = None  # type: ignore[assignment,misc]

#: What :meth:`_Plain.convert` returns for a value it leaves to Typer.
_TYPER = object()


def lighten(params: Iterable[Any]) -> None:
    """Give Typer's options among ``params`` the plain converter (those not converted yet)."""
    if RuntimeParam is None:  # pragma: no cover - another Typer
        return
    for param in params:
        descriptor = getattr(param, "type_descriptor", None)
        if isinstance(descriptor, TypeDescriptor) and getattr(param, "_runtime_param", 1) is None:
            param._runtime_param = _Plain(
                parameter_info=descriptor.parameter_info,
                annotation=descriptor.annotation,
                descriptor=descriptor,
            )


if RuntimeParam is not None:

    @dataclass(frozen=True)
    class _Plain(RuntimeParam):
        """Converts plain values itself; Typer's converter does the rest."""

        descriptor: TypeDescriptor

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            converted = self.convert(self.annotation, value)
            if converted is not _TYPER:
                return converted
            return build_runtime_param(self.descriptor)._coerce_value(value, param, ctx)

        def convert(self, annotation: Any, value: Any) -> Any:
            """``value`` as ``annotation``, or :data:`_TYPER` when that is not plain."""
            if get_origin(annotation) is list:
                if not isinstance(value, (list, tuple)):
                    return _TYPER
                (item_type,) = get_args(annotation)
                items = [self.convert(item_type, item) for item in value]
                return _TYPER if any(item is _TYPER for item in items) else items
            if annotation is str or annotation is bool:
                return value if isinstance(value, annotation) else _TYPER
            if annotation is int:
                return self._whole(value)
            if annotation is Path:
                return self._path(value)
            if isinstance(annotation, type) and issubclass(annotation, Enum):
                try:
                    return coerce_cli_choice(
                        value,
                        choices=tuple(annotation),
                        case_sensitive=self.parameter_info.case_sensitive,
                    )
                except ValueError:
                    return _TYPER
            return _TYPER

        def _path(self, value: Any) -> Any:
            info = self.parameter_info
            checked = info.exists or not (info.file_okay and info.dir_okay) or info.resolve_path
            if checked or info.allow_dash or info.path_type is not None:
                return _TYPER
            return Path(value) if isinstance(value, str) and value else _TYPER

        def _whole(self, value: Any) -> Any:
            if isinstance(value, bool):
                return _TYPER
            if isinstance(value, str):
                digits = value.strip().lstrip("+-")
                if not (digits.isascii() and digits.isdigit()):
                    return _TYPER
                value = int(value)
            if not isinstance(value, int):
                return _TYPER
            info = self.parameter_info
            if (info.min is not None and value < info.min) or (
                info.max is not None and value > info.max
            ):
                return _TYPER
            return value


__all__ = ["lighten"]
