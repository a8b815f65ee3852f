"""SQS over the Query protocol (form-encoded `Action=...`, XML answers), as older SDKs speak it.
Pure: flattened Query parameters are nested into the JSON protocol's shape, so `sqs_api` decodes and
validates both protocols alike; outputs are rendered from the same dicts into SQS's XML.

Flattened names, e.g.: `Attribute.1.Name`/`Attribute.1.Value` (a map), `AttributeName.1` (a list),
`MessageAttribute.1.Value.StringValue`, `SendMessageBatchRequestEntry.2.MessageBody`.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any
from xml.etree import ElementTree

from dovecote.actors.errors import BrokerError, invalid

NAMESPACE = "http://queue.amazonaws.com/doc/2012-11-05/"
# The deepest flattened name of either service has 8 parts
# (`PublishBatchRequestEntries.member.1.MessageAttributes.entry.1.Value.StringValue`), and no list
# of theirs holds a million members: names beyond these are refused before they are nested.
MAX_NAME_PARTS = 16
MAX_INDEX_DIGITS = 6

# flattened member -> (JSON member, key field, value field) for maps
_MAPS = {
    "Attribute": ("Attributes", "Name", "Value"),
    "MessageAttribute": ("MessageAttributes", "Name", "Value"),
    "MessageSystemAttribute": ("MessageSystemAttributes", "Name", "Value"),
    "Tag": ("Tags", "Key", "Value"),
}
# flattened member -> JSON member for lists
_LISTS = {
    "AttributeName": "AttributeNames",
    "MessageAttributeName": "MessageAttributeNames",
    "MessageSystemAttributeName": "MessageSystemAttributeNames",
    "SendMessageBatchRequestEntry": "Entries",
    "DeleteMessageBatchRequestEntry": "Entries",
    "ChangeMessageVisibilityBatchRequestEntry": "Entries",
    "StringListValue": "StringListValues",
    "BinaryListValue": "BinaryListValues",
    "TagKey": "TagKeys",
    "AWSAccountId": "AWSAccountIds",
    "ActionName": "Actions",
}
# JSON list member -> XML element name of each item, per action where it differs
_LIST_ITEMS = {
    "QueueUrls": "QueueUrl",
    "queueUrls": "QueueUrl",
    "Results": "ListMessageMoveTasksResultEntry",
    "Messages": "Message",
    "Failed": "BatchResultErrorEntry",
}
# JSON map member -> (XML element of each entry, element of its key)
_MAP_ELEMENTS = {
    "Attributes": ("Attribute", "Name"),
    "MessageAttributes": ("MessageAttribute", "Name"),
    "Tags": ("Tag", "Key"),
}
_SUCCESS_ITEMS = {
    "SendMessageBatch": "SendMessageBatchResultEntry",
    "DeleteMessageBatch": "DeleteMessageBatchResultEntry",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibilityBatchResultEntry",
}


def query_action(pairs: Iterable[tuple[str, str]]) -> str:
    """The action of a Query request (SQS or SNS): the one place it is read, for the signature
    check and for the dispatch alike. "" when there is none. Raises
    BrokerError(InvalidQueryParameter) when `Action` is given more than once, whatever the values:
    two readers taking different ones is how a request is checked as one action and run as another."""
    actions = [value for key, value in pairs if key == "Action"]
    if len(actions) > 1:
        raise BrokerError("InvalidQueryParameter", f"The request gives the Action parameter {len(actions)} times; give it once.")
    return actions[0] if actions else ""


def query_tree(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """A Query request's dotted parameter names as a tree (`A.1.B=x` -> {"A": {"1": {"B": "x"}}}),
    without the protocol's own parameters (the action is query_action's)."""
    tree: dict[str, Any] = {}
    for key, value in pairs:
        if key in ("Action", "Version", "AWSAccessKeyId", "SignatureMethod", "SignatureVersion", "Signature", "Timestamp"):
            continue
        node = tree
        parts = key.split(".", MAX_NAME_PARTS)
        if len(parts) > MAX_NAME_PARTS:
            raise BrokerError("MalformedQueryString", f"The parameter name {key[:80]!r}... has more than {MAX_NAME_PARTS} parts.")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                child = node[part] = {"": child}
            node = child
        node[parts[-1]] = value
    return tree


def nest(action: str, pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """The parameters of a Query request for `action` (query_action's), nested into the JSON
    protocol's shape. Raises BrokerError(InvalidParameterValue) on flattened parameters that do not
    nest."""
    params = _convert(query_tree(pairs))
    if action == "CreateQueue" and "Tags" in params:
        params["tags"] = params.pop("Tags")  # CreateQueue alone names its tag map in lower case
    return params


# JSON member -> its empty value, for a list or map given as `Name=` with no members
_EMPTY = {member: [] for member in _LISTS.values()} | {member: {} for member, _, _ in _MAPS.values()}


def _convert(tree: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in tree.items():
        member = _LISTS.get(name) or (_MAPS[name][0] if name in _MAPS else name)
        if value == "" and member in _EMPTY:
            # botocore sends an empty list as its bare name (`SendMessageBatchRequestEntry=`), as AWS takes it
            out[member] = type(_EMPTY[member])()
        elif name in _MAPS and isinstance(value, dict):
            member, key_field, value_field = _MAPS[name]
            entries = indexed(value)
            if key_field in value:  # the single, unnumbered form: Attribute.Name / Attribute.Value
                entries = [value]
            converted: dict[str, Any] = {}
            for entry in entries:
                key = entry.get(key_field, "") if isinstance(entry, dict) else None
                if not isinstance(key, str):
                    raise BrokerError(
                        "InvalidParameterValue", f"Each {name}.N parameter needs {key_field} and {value_field} members."
                    )
                if key in converted:  # two values for one key: refused, not one of them kept
                    raise invalid(f"Value {key[:128]} for parameter {name}.N.{key_field} is invalid. Reason: it is given twice.")
                item = entry.get(value_field, "")
                converted[key] = _convert(item) if isinstance(item, dict) else item
            out[member] = converted
        elif name in _LISTS and isinstance(value, dict):
            out[_LISTS[name]] = [_convert(item) if isinstance(item, dict) else item for item in indexed(value)]
        elif isinstance(value, dict):
            out[name] = _convert(value)
        else:
            out[name] = value
    return out


def indexed(numbered: dict[str, Any]) -> list[Any]:
    """The members of `X.1`, `X.2`, ... in numeric order (keys that are not numbers are ignored).
    Raises BrokerError(MalformedQueryString) on an index that is a number but not one of the
    protocol's: other digits than ASCII's (`²`), or more of them than any list could need."""
    indexes = [key for key in numbered if key.isdigit()]
    for key in indexes:
        if not key.isascii() or len(key) > MAX_INDEX_DIGITS:
            raise BrokerError(
                "MalformedQueryString", f"A list index is a number of at most {MAX_INDEX_DIGITS} digits 0-9, not {key[:20]!r}."
            )
    return [numbered[key] for key in sorted(indexes, key=int)]


def render(action: str, output: dict[str, Any], request_id: str) -> bytes:
    root = ElementTree.Element(f"{action}Response", xmlns=NAMESPACE)
    result = ElementTree.SubElement(root, f"{action}Result")
    for name, value in output.items():
        _append(result, action, name, value)
    metadata = ElementTree.SubElement(root, "ResponseMetadata")
    ElementTree.SubElement(metadata, "RequestId").text = request_id
    return _xml(root)


def render_error(code: str, message: str, sender_fault: bool, request_id: str) -> bytes:
    root = ElementTree.Element("ErrorResponse", xmlns=NAMESPACE)
    error = ElementTree.SubElement(root, "Error")
    ElementTree.SubElement(error, "Type").text = "Sender" if sender_fault else "Receiver"
    ElementTree.SubElement(error, "Code").text = code
    ElementTree.SubElement(error, "Message").text = message
    ElementTree.SubElement(error, "Detail")
    ElementTree.SubElement(root, "RequestId").text = request_id
    return _xml(root)


def _xml(root: ElementTree.Element) -> bytes:
    """The document, with each carriage return escaped as AWS escapes it (`&#xD;`): a parser
    turns a literal one (and `\r\n`) into `\n`, so a body would not come back as it was sent.
    ElementTree writes no whitespace of its own, so every `\r` is in a text."""
    return ElementTree.tostring(root, encoding="utf-8", xml_declaration=True).replace(b"\r", b"&#xD;")


def _append(parent: ElementTree.Element, action: str, name: str, value: Any) -> None:
    if name in _MAP_ELEMENTS and isinstance(value, dict):
        element_name, key_name = _MAP_ELEMENTS[name]
        for key, item in value.items():
            entry = ElementTree.SubElement(parent, element_name)
            ElementTree.SubElement(entry, key_name).text = key
            _append(entry, action, "Value", item)
    elif isinstance(value, list):
        item_name = _SUCCESS_ITEMS.get(action, name) if name == "Successful" else _LIST_ITEMS.get(name, name)
        for item in value:
            _append(parent, action, item_name, item)
    elif isinstance(value, dict):
        element = ElementTree.SubElement(parent, name)
        for key, item in value.items():
            _append(element, action, key, item)
    else:
        ElementTree.SubElement(parent, name).text = _text(value)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return str(value)
