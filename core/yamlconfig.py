"""The strict YAML config loader: every config kind (rule packs, routing, settings, metrics, kernel patterns).

A file is read with the line of every YAML path, duplicate keys are refused, and the pydantic model
that describes the file validates it.  Every problem of the file is reported at once, each in one
format, ``file:line: yaml.path: message`` (the path is left out for the file as a whole):

>>> from pydantic import BaseModel, ConfigDict
>>> class Target(BaseModel):
...     model_config = ConfigDict(extra="forbid")
...     url: str
...     timeout: int = 10
>>> class Config(BaseModel):
...     model_config = ConfigDict(extra="forbid")
...     targets: list[Target]
>>> load("targets:\\n  - url: http://a\\n    timout: 5\\n  - timeout: soon\\n", Config, source="c.yaml")
Traceback (most recent call last):
...
core.yamlconfig.ConfigError: c.yaml:3: targets[0].timout: unknown key "timout" (did you mean "timeout"?)
c.yaml:4: targets[1].timeout: expected an integer, got "soon"
c.yaml:4: targets[1].url: required key missing

Loaders that check more than the schema (cross references, several files) use the steps:
``parse`` (or ``read``) gives a ``Document``; ``Document.validate`` runs the model;
``Document.error`` adds a problem at a YAML path; ``raise_for(documents)`` raises them all.
"""

import difflib
import json
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_UNSET: Any = object()


class ConfigError(ValueError):
    """Every problem found, one ``file:line: yaml.path: message`` string each, in ``errors``."""

    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = list(errors)


def path_str(loc: Iterable) -> str:
    """``("rules", 3, "for")`` -> ``"rules[3].for"``.

    >>> path_str(("rules", 3, "match", "matchers", 0)), path_str(())
    ('rules[3].match.matchers[0]', '')
    """
    out = ""
    for p in loc:
        out += f"[{p}]" if isinstance(p, int) else ("." if out else "") + str(p)
    return out


class Document:
    """One YAML document: its data, the 1-based line of every YAML path, and the problems found in it."""

    def __init__(self, source: str, data: Any = None, lines: dict[tuple, int] | None = None):
        self.source = source
        self.data = data
        self.lines: dict[tuple, int] = lines if lines is not None else {(): 1}
        self.readable = True  # False when the text could not be read or parsed (data is then None)
        self.problems: list[tuple[int, str]] = []
        self.plain: dict[tuple, tuple[str, str]] = {}  # path -> (text, what YAML made of it) of unquoted non-strings

    def line_of(self, loc: Iterable) -> int:
        """The line of ``loc``, or of its nearest ancestor that is in the file."""
        loc = tuple(loc)
        while loc and loc not in self.lines:
            loc = loc[:-1]
        return self.lines.get(loc, 1)

    def error(self, loc: Iterable, message: str, line: int | None = None) -> None:
        """Record one problem at a YAML path (``()``: the file as a whole)."""
        loc = tuple(loc)
        line = line or self.line_of(loc)
        where = path_str(loc)
        text = f"{self.source}:{line}: {where}: {message}" if where else f"{self.source}:{line}: {message}"
        if (line, text) not in self.problems:
            self.problems.append((line, text))

    @property
    def errors(self) -> list[str]:
        """The problems in line order (on one line, in path order)."""
        return [text for _, text in sorted(self.problems)]

    def validate(self, model: type[M], data: Any = _UNSET, *, go_strings: bool = False) -> M | None:
        """Validate ``data`` (default: the document's) with ``model``; None (and problems recorded) if invalid.

        ``go_strings``: read as Go's yaml.v2 reads into a string field (Alertmanager's files): an unquoted ``500``,
        ``17:00`` or ``true`` where the model wants a string is the text written, not an error (``data`` is
        changed in place to that text)."""
        if not self.readable:
            return None
        data = self.data if data is _UNSET else data
        for _ in range(3 if go_strings else 1):
            try:
                return model.model_validate({} if data is None else data)
            except ValidationError as exc:
                errors = pydantic_errors(exc, model)
            texts = [(loc, self.plain[tuple(loc)][0]) for loc, message in errors
                     if message.startswith("expected a string") and tuple(loc) in self.plain]
            if not go_strings or not texts or not isinstance(data, (dict, list)):
                break
            for loc, text in texts:
                _put(data, loc, text)
        for loc, message in errors:
            plain = self.plain.get(tuple(loc))
            if plain is not None and message.startswith("expected a string"):
                # YAML 1.1 reads no, on, 0x20, 1_000, 1:30 and 500 as booleans and numbers; say so
                message += f" (YAML reads {plain[0]} as {plain[1]}: quote it, {json.dumps(plain[0])})"
            self.error(loc, message)
        return None

    def raise_for_errors(self) -> None:
        if self.problems:
            raise ConfigError(self.errors)


def _put(data, loc: tuple, value) -> None:
    """Set the value at YAML path ``loc`` in ``data`` (nothing when the path is not there)."""
    try:
        for k in loc[:-1]:
            data = data[k]
        data[loc[-1]] = value
    except (KeyError, IndexError, TypeError):
        pass


def without_nulls(data):
    """``data`` with every mapping key whose value is null left out, at any depth: Go's yaml.v2 leaves such a field
    at its zero value, as if absent (Alertmanager's ``routes: ~``, ``matchers: ~``, Helm's empty values)."""
    if isinstance(data, dict):
        return {k: without_nulls(v) for k, v in data.items() if v is not None}
    if isinstance(data, list):
        return [without_nulls(v) for v in data]
    return data


def raise_for(documents: Iterable[Document], extra: Iterable[str] = ()) -> None:
    """Raise one ConfigError with the problems of every document (each file's in line order), if any."""
    errors = [e for d in documents for e in d.errors] + list(extra)
    if errors:
        raise ConfigError(errors)


# ---------------------------------------------------------------- YAML with positions


def parse(text: str, source: str) -> Document:
    """Parse one YAML document named ``source``; syntax errors and duplicate keys become problems.

    >>> d = parse("a: 1\\nb:\\n  - x\\n  - {c: 2, c: 3}\\n", "f.yaml")
    >>> d.data, d.lines[("b", 1)], d.errors
    ({'a': 1, 'b': ['x', {'c': 3}]}, 4, ['f.yaml:4: b[1].c: duplicate key "c" (first at line 4)'])
    >>> parse("a: [1\\n", "f.yaml").errors
    ["f.yaml:2: YAML syntax error: did not find expected ',' or ']'"]
    """
    doc = Document(source)
    loader = _Loader(text)
    node = None
    try:
        node = loader.get_single_node()
        size = _expanded(node) if node is not None else 0
        if size is None:  # the constructor would make it, and every walk of it (ours, pydantic's) would never end
            doc.readable = False
            doc.error((), "an alias is used inside the value its anchor names (a cycle): cannot be read", line=1)
            return doc
        if size > EXPANDED_MAX:
            doc.readable = False
            doc.error((), f"its aliases expand to more than {EXPANDED_MAX:,} values: an alias bomb?", line=1)
            return doc
        if node is not None:
            # before constructing: the constructor spreads merge keys (<<: *base) into node.value in place, and the
            # walk would then take an override of a merged key for a duplicate key
            _walk(node, (), doc)
        doc.data = loader.construct_document(node) if node is not None else None
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
        # a scalar its tag cannot make: 2026-02-30T22:00:00Z (a timestamp), !!int abc, !!bool maybe
        doc.readable, doc.data = False, None
        where, bad = _unmakeable(node) if node is not None else ((), None)
        what = f"cannot read {bad.value!r} as {bad.tag.rsplit(':', 1)[-1]}" if bad is not None else "cannot read it"
        why = f": {exc}" if isinstance(exc, ValueError) else ""  # a KeyError's or AttributeError's words say nothing
        doc.error(where, what + why, line=bad.start_mark.line + 1 if bad is not None else 1)
        return doc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        doc.readable, doc.data = False, None
        doc.error((), f"YAML syntax error: {exc.problem or exc}", line=mark.line + 1 if mark else 1)
        return doc
    except yaml.YAMLError as exc:
        doc.readable, doc.data = False, None
        doc.error((), f"YAML syntax error: {exc}", line=1)
        return doc
    finally:
        loader.dispose()
    return doc


def unreadable(path: str, *, text: bool = False) -> str | None:
    """Why a file a config names cannot be read, in the system's words ("No such file or directory", "Is a
    directory", "Permission denied"), or None; opened, not read (a FIFO would block a read), unless ``text``: then
    read as UTF-8, as a token file is, and a file that is not says so.  Every loader checks named files with this.

    >>> unreadable("/nonexistent/x"), unreadable("/"), unreadable("/dev/null")
    ('No such file or directory', 'Is a directory', None)
    """
    import errno
    import os
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        return getattr(exc, "strerror", None) or str(exc)
    try:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            return os.strerror(errno.EISDIR)
        if text:
            with open(fd, encoding="utf-8", closefd=False) as fh:
                fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        return getattr(exc, "strerror", None) or str(exc)
    finally:
        os.close(fd)
    return None


def read(path: str | Path, source: str | None = None) -> Document:
    """``parse`` of a file's text; a file that cannot be read is a problem of the document."""
    source = source or str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        doc = Document(source)
        doc.readable = False
        doc.error((), f"cannot read: {getattr(exc, 'strerror', None) or exc}")
        return doc
    return parse(text, source)


def load(path_or_text: str | Path, model: type[M], *, source: str | None = None,
         check: Callable[[dict], Iterable[tuple[tuple, str]]] | None = None) -> M:
    """Read (a path), or parse (``source`` given: the first argument is the YAML text), and validate.

    ``check`` sees the raw mapping and names further problems as (YAML path, message), e.g. cross
    references; they are reported with the schema's.  Raises ConfigError listing every problem.
    """
    doc = read(path_or_text) if source is None else parse(str(path_or_text), source)
    cfg = doc.validate(model)
    if check is not None and isinstance(doc.data, dict):
        for loc, message in check(doc.data):
            doc.error(loc, message)
    doc.raise_for_errors()
    return cfg


EXPANDED_MAX = 200_000  # values a config's aliases may expand to (a real one has a few thousand)


def load_data(text: str, source: str):
    """The data of one YAML document that is not a config (recorded Kubernetes Event lists), as ``yaml.safe_load``
    makes it (libyaml's loader when present), refused with ValueError when its aliases hold a cycle or expand to
    more values than its text could write out (an alias bomb: 491 bytes made 2 GB and a crash of ``collect
    replay``).  yaml.YAMLError for a syntax error.

    >>> load_data("items: [1, 2]", "e.yaml")
    {'items': [1, 2]}
    >>> bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\\n" + "".join(
    ...     f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\\n" for p, c in zip("abcdef", "bcdefg"))
    >>> load_data(bomb, "e.yaml")
    Traceback (most recent call last):
    ...
    ValueError: e.yaml: its aliases expand to more than 200,000 values: an alias bomb?
    """
    limit = max(EXPANDED_MAX, len(text) // 2)  # a value written out takes two bytes at least ("1\n", "- ")
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded(node, limit)
        if size is None:
            raise ValueError(f"{source}: an alias is used inside the value its anchor names (a cycle)")
        if size > limit:
            raise ValueError(f"{source}: its aliases expand to more than {limit:,} values: an alias bomb?")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded(root, limit: int = EXPANDED_MAX) -> int | None:
    """How many values the document holds once its aliases are expanded (at most ``limit`` + 1), counting each
    shared node once per use (a memo per node: linear in the nodes written, however deep the aliases nest); None
    when a node holds itself (``a: &a [*a]``: no end to expand to)."""
    size: dict[int, int] = {}
    entered: set[int] = set()
    stack = [(root, False)]
    while stack:
        n, done = stack.pop()
        if id(n) in size:
            continue
        if not done:
            if id(n) in entered:  # entered and not finished: it is its own descendant
                return None
            entered.add(id(n))
        kids = [x for kv in n.value for x in kv] if isinstance(n, yaml.MappingNode) else (
            n.value if isinstance(n, yaml.SequenceNode) else [])
        if done:
            size[id(n)] = min(1 + sum(size[id(k)] for k in kids), limit + 1)
        else:
            stack.append((n, True))
            stack.extend((k, False) for k in kids if id(k) not in size)
    return size[id(root)]


def _unmakeable(root) -> tuple[tuple, Any]:
    """The first scalar (document order) whose tag cannot make it, and its YAML path; ((), None) if none is found."""
    maker = _Loader("")
    try:
        stack = [(root, ())]
        while stack:
            n, path = stack.pop()
            if isinstance(n, yaml.ScalarNode):
                try:
                    maker.construct_object(n)
                except (ValueError, TypeError, KeyError, AttributeError, OverflowError, yaml.YAMLError):
                    return path, n
            elif isinstance(n, yaml.MappingNode):
                stack.extend(reversed([(v, path + (k.value if isinstance(k, yaml.ScalarNode) else "?",))
                                       for k, v in n.value]))
            elif isinstance(n, yaml.SequenceNode):
                stack.extend(reversed([(v, path + (i,)) for i, v in enumerate(n.value)]))
        return (), None
    finally:
        maker.dispose()


def _walk(node, path: tuple, doc: Document) -> None:
    doc.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for k, v in _pairs(node):
            key = _key(k)
            p, line = path + (key,), k.start_mark.line + 1
            if key in first:
                doc.error(p, f"duplicate key {json.dumps(key)} (first at line {first[key]})", line=line)
                continue
            first[key] = line
            doc.lines[p] = line
            _walk(v, p, doc)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _walk(v, path + (i,), doc)
    elif node.tag in _PLAIN and not node.style:  # an unquoted scalar that is not a string
        doc.plain[path] = (node.value, _PLAIN[node.tag])


_PLAIN = {"tag:yaml.org,2002:bool": "a boolean", "tag:yaml.org,2002:int": "a number", "tag:yaml.org,2002:float": "a number"}


def _pairs(node: yaml.MappingNode):
    """A mapping's (key, value) nodes with YAML merge keys (``<<: *base``) spread in place.

    A merged key is never a duplicate: a key written in the mapping overrides it, and of several merged mappings
    (``<<: [*a, *b]``) the first that has the key gives it, as YAML (and Go's yaml, PyYAML) merge.  Only keys
    written twice in one mapping are duplicates (a merged mapping's own are said where it is written)."""
    merge = "tag:yaml.org,2002:merge"
    given = {_key(k) for k, _ in node.value if k.tag != merge}
    for k, v in node.value:
        if k.tag == merge:
            for m in v.value if isinstance(v, yaml.SequenceNode) else [v]:
                if isinstance(m, yaml.MappingNode):
                    for mk, mv in _pairs(m):
                        if _key(mk) not in given:
                            given.add(_key(mk))
                            yield mk, mv
        else:
            yield k, v


def _key(k) -> str:
    return k.value if isinstance(k, yaml.ScalarNode) else str(k.value)


# ---------------------------------------------------------------- pydantic errors -> messages

_WORDS = {
    "string_type": "a string", "string_unicode": "a string", "int_type": "an integer",
    "int_parsing": "an integer", "int_from_float": "an integer", "float_type": "a number",
    "float_parsing": "a number", "decimal_type": "a number", "bool_type": "true or false",
    "bool_parsing": "true or false", "list_type": "a list", "tuple_type": "a list", "set_type": "a list",
    "frozen_set_type": "a list", "dict_type": "a mapping", "model_type": "a mapping",
    "model_attributes_type": "a mapping", "none_required": "nothing (null)",
}
_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def shown(value: Any, limit: int = 60) -> str:
    """A value as the message quotes it (JSON, shortened).

    >>> shown("soon"), shown(3), shown(None), shown({"a": [1, 2]}), shown("x" * 80)[-6:]
    ('"soon"', '3', 'null', '{"a": [1, 2]}', 'xx..."')
    """
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit - 4] + '..."' if text.startswith('"') else text[:limit - 3] + "..."


def _keys(model: type[BaseModel]) -> list[str]:
    return sorted(f.alias or n for n, f in model.model_fields.items())


def _nearest(word: str, choices: Iterable[str]) -> str | None:
    """The closest choice to a misspelt word (words under 3 characters get no guess: "=" is not ">=")."""
    if len(str(word)) < 3:
        return None
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def _unknown_key(key, model: type[BaseModel] | None) -> str:
    keys = _keys(model) if model is not None else []
    near = _nearest(key, keys)
    if near:
        return f"unknown key {shown(key)} (did you mean {shown(near)}?)"
    return f"unknown key {shown(key)}" + (f" (expected one of: {', '.join(keys)})" if keys else "")


def _expected(choices: str, value: Any, options: Iterable[str] = ()) -> str:
    near = _nearest(value, options) if isinstance(value, str) else None
    return f"expected {choices}, got {shown(value)}" + (f" (did you mean {shown(near)}?)" if near else "")


# authorization, basic_auth, oauth2, sigv4: blocks of credentials, so a string written in place of one may be them
_SECRET_KEY = re.compile(r"(password|secret|token|(?:_|api)key|url|credential|authorization|basic_auth|oauth2|sigv4)"
                         r"s?(_file|_env)?$", re.I)


def is_secret_key(key) -> bool:
    """Whether a key names a secret-bearing slot (its value is never quoted): passwords, tokens, keys, URLs
    (receiver URLs carry tokens), and their ``*_file`` / ``*_env`` forms (a secret pasted there is not quoted either);
    the credential blocks ``authorization``, ``basic_auth``, ``oauth2`` and ``sigv4`` (``authorization: "Bearer X"``
    is an error that must not quote X).

    A bare ``key`` (a label or taint key, a TLS key file's path) is not a secret.

    >>> [is_secret_key(k) for k in ("routing_key", "auth_password", "api_url", "password_file", "channel", "key")]
    [True, True, True, True, False, False]
    >>> [is_secret_key(k) for k in ("authorization", "basic_auth", "oauth2", "sigv4", "tls_config", "proxy_from_env")]
    [True, True, True, True, False, False]
    """
    return isinstance(key, str) and bool(_SECRET_KEY.search(key))


def _message(err: dict, owner: Any, key, secret: bool = False) -> str:
    """One pydantic error as a message; ``owner`` is the model (or union) holding ``key``.

    ``secret``: the value sits in a secret-bearing slot; the message never quotes it."""
    msg = _describe(err, owner, key)
    value = err.get("input")
    if secret and value is not None:
        msg = msg.replace(shown(value), "a value not shown (a secret slot)")
        for text in _strings(value):
            msg = msg.replace(text, "<redacted>")
    return msg


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if len(value) >= 4 else []
    if isinstance(value, Mapping):
        return [s for k, v in value.items() for s in _strings(k) + _strings(v)]
    if isinstance(value, (list, tuple, set)):
        return [s for v in value for s in _strings(v)]
    return [str(value)] if isinstance(value, (int, float)) and len(str(value)) >= 4 else []


def _describe(err: dict, owner: Any, key) -> str:
    typ, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if typ == "extra_forbidden":
        return _unknown_key(key, owner)
    if typ == "missing":
        return "required key missing"
    if typ in _WORDS:
        return f"expected {_WORDS[typ]}, got {shown(value)}"
    if typ == "literal_error":
        expected = ctx.get("expected", "")
        options = [o.strip().strip("'") for o in expected.replace(" or ", ",").split(",") if o.strip()]
        return _expected(expected, value, options)
    if typ == "enum":
        return _expected(ctx.get("expected", ""), value)
    if typ in ("union_tag_invalid", "union_tag_not_found"):
        options = _tags(owner, ctx.get("discriminator", "").strip("'"))
        if typ == "union_tag_not_found":
            return f"required key missing (expected {_or(options)})"
        return _expected(_or(options), ctx.get("tag"), options)
    if typ in ("value_error", "assertion_error"):
        return str(ctx.get("error", err["msg"])).removeprefix("Assertion failed, ")
    if typ in _BOUNDS:
        return f"must be {_BOUNDS[typ]} {next(iter(ctx.values()))}, got {shown(value)}"
    if typ in ("too_short", "string_too_short"):
        n = ctx.get("min_length", 1)
        return "must not be empty" if n == 1 else f"must have at least {n} {'characters' if 'string' in typ else 'items'}"
    if typ in ("too_long", "string_too_long"):
        n = ctx.get("max_length")
        return f"must have at most {n} {'characters' if 'string' in typ else 'items'}"
    if typ == "string_pattern_mismatch":
        return f"expected text matching {ctx.get('pattern')}, got {shown(value)}"
    msg = err["msg"]
    return msg[:1].lower() + msg[1:]


def _tags(union, discriminator: str) -> list[str]:
    """The values a discriminated union's members take for ``discriminator``, in declaration order."""
    out = []
    for member in (_unwrap(a) for a in get_args(_unwrap(union))):
        f = member.model_fields.get(discriminator) if _is_model(member) else None
        if f is not None and get_origin(f.annotation) is typing.Literal:
            out += [str(a) for a in get_args(f.annotation)]
    return out


def _or(options: list[str]) -> str:
    quoted = [f"'{o}'" for o in options]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def _unwrap(tp):
    """The type a value must have, without Annotated metadata and Optional (a real union stays one)."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType) and sum(a is not type(None) for a in get_args(tp)) == 1:
            tp = next(a for a in get_args(tp) if a is not type(None))
        else:
            return tp


def _is_model(tp) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _union_member(tp, tag):
    """The member of a union that pydantic names ``tag`` in an error location (a class name or a
    discriminator value), or None for a member that is not a model."""
    for member in (_unwrap(a) for a in get_args(tp)):
        if not _is_model(member):
            continue
        if member.__name__ == tag:
            return member
        for f in member.model_fields.values():
            if get_origin(f.annotation) is typing.Literal and tag in get_args(f.annotation):
                return member
    return None


def _locate(root: type[BaseModel], loc: tuple):
    """pydantic's location -> (YAML path, the model owning the last key or None, index of a union in the path)."""
    path: list = []
    tp, owner, union_at = root, None, None
    parts = list(loc)
    i = 0
    while i < len(parts):
        part = parts[i]
        i += 1
        if part == "[key]":
            continue
        tp = _unwrap(tp) if tp is not None else None
        origin = get_origin(tp)
        if origin in (Union, types.UnionType):  # pydantic names the member it tried
            tp, union_at = _union_member(tp, part), len(path)
            continue
        if _is_model(tp):
            field = next((f for n, f in tp.model_fields.items() if part in (n, f.alias)), None)
            name = next((f.alias or n for n, f in tp.model_fields.items() if part in (n, f.alias)), part)
            path.append(name)
            owner, tp = tp, field.annotation if field is not None else None
        elif origin in (list, tuple, set, frozenset) or (isinstance(part, int) and tp is None):
            path.append(part)
            args = [a for a in get_args(tp) if a is not Ellipsis]
            tp = args[0] if args else None
        elif origin in (dict, Mapping) or tp is None:
            path.append(part)
            if i < len(parts) and parts[i] == "[key]":
                tp = None
            else:
                tp = get_args(tp)[1] if len(get_args(tp)) == 2 else None
            owner = None
        else:
            if isinstance(part, int) or not str(part).startswith(("function-", "literal[", "json-or-python")):
                path.append(part)
            tp = None
    return tuple(path), owner, union_at


def pydantic_errors(exc: ValidationError, model: type[BaseModel]) -> list[tuple[tuple, str]]:
    """A ValidationError of ``model`` -> [(YAML path, message)], one per problem, with union branches merged."""
    found = []
    for err in exc.errors(include_url=False):
        loc, owner, union_at = _locate(model, tuple(err["loc"]))
        key = loc[-1] if loc else None
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):  # said at the discriminator's key
            field = next((f for n, f in owner.model_fields.items() if key in (n, f.alias)), None) if owner else None
            owner = field.annotation if field is not None else None
            loc += (str((err.get("ctx") or {}).get("discriminator", "type")).strip("'"),)
        secret = any(is_secret_key(p) for p in loc) or any(is_secret_key(p) for p in err["loc"])
        found.append((loc, _message(err, owner, key, secret), union_at))
    # a union reports one error per member it tried: keep the members whose shape fit (deeper errors),
    # and say the type errors of the same place as one ("expected a string or a list, got 3")
    deeper = {loc[:u] for loc, _, u in found if u is not None and len(loc) > u}
    out: dict[tuple, list[str]] = {}
    for loc, msg, u in found:
        if u is not None and len(loc) == u and loc in deeper:
            continue
        msgs = out.setdefault(loc, [])
        if msg not in msgs:
            msgs.append(msg)
    result = []
    for loc, msgs in out.items():
        types_ = [m for m in msgs if m.startswith("expected ") and ", got " in m]
        if len(types_) > 1 and len({m.rsplit(", got ", 1)[1] for m in types_}) == 1:
            whats = [m.removeprefix("expected ").rsplit(", got ", 1)[0] for m in types_]
            msgs = [f"expected {' or '.join(whats)}, got {types_[0].rsplit(', got ', 1)[1]}"] + \
                   [m for m in msgs if m not in types_]
        result.extend((loc, m) for m in msgs)
    return result

