"""Handlers written for API Gateway WebSocket APIs, in the style of the seeds (connect / disconnect / message with
rooms, answering through the `apigatewaymanagementapi` client). Nothing here knows about Switchboard: the same
functions run on AWS Lambda. A dict stands in for the DynamoDB table."""
import json
import os
import time

import boto3

CONNECTIONS: dict[str, dict] = {}  # connectionId -> {"userId", "roomId", "connectedAt"}


def management_client(event):
    endpoint = os.environ.get("WEBSOCKET_ENDPOINT") or \
        f"https://{event['requestContext']['domainName']}/{event['requestContext']['stage']}"
    return boto3.client("apigatewaymanagementapi", endpoint_url=endpoint)


def connect_handler(event, context=None):
    query = event.get("queryStringParameters") or {}
    if query.get("token") == "invalid":
        return {"statusCode": 401, "body": "Unauthorized"}
    user_id = query.get("userId", "anonymous")
    CONNECTIONS[event["requestContext"]["connectionId"]] = {
        "userId": user_id, "roomId": None, "connectedAt": event["requestContext"]["connectedAt"],
    }
    # Beyond API Gateway: a `context` in the reply reaches later events as requestContext.authorizer.
    return {"statusCode": 200, "body": "Connected", "context": {"userId": user_id}}


def disconnect_handler(event, context=None):
    connection = CONNECTIONS.pop(event["requestContext"]["connectionId"], None)
    if connection and connection["roomId"]:
        broadcast(event, connection["roomId"], {"action": "userLeft", "roomId": connection["roomId"],
                                                "userId": connection["userId"], "timestamp": now()})
    return {"statusCode": 200, "body": "Disconnected"}


def message_handler(event, context=None):
    connection_id = event["requestContext"]["connectionId"]
    try:
        body = json.loads(event["body"])
    except (TypeError, ValueError):
        return send(event, connection_id, {"action": "error", "message": "Invalid JSON", "timestamp": now()})
    action = body.get("action") or event["requestContext"]["routeKey"]
    sender = CONNECTIONS.get(connection_id)
    if sender is None:
        return {"statusCode": 410, "body": "Unknown connection"}
    if action == "joinRoom":
        sender["roomId"] = body.get("roomId")
        members = [c["userId"] for c in CONNECTIONS.values() if c["roomId"] == sender["roomId"]]
        broadcast(event, sender["roomId"], {"action": "userJoined", "roomId": sender["roomId"],
                                            "userId": sender["userId"], "timestamp": now()}, skip=connection_id)
        return send(event, connection_id, {"action": "joinedRoom", "roomId": sender["roomId"], "members": members})
    if action == "sendMessage":
        if sender["roomId"] != body.get("roomId"):
            return send(event, connection_id, {"action": "error", "message": "Not in room", "timestamp": now()})
        broadcast(event, sender["roomId"], {"action": "message", "roomId": sender["roomId"], "message": body.get("message"),
                                            "sender": sender["userId"], "timestamp": now()})
        return {"statusCode": 200, "body": "Sent"}
    if action == "ping":
        return send(event, connection_id, {"action": "pong", "timestamp": now()})
    return send(event, connection_id, {"action": "error", "message": f"Unknown action: {action}", "timestamp": now()})


def handler(event, context=None):
    """One function for every route, as a single Lambda behind API Gateway would be."""
    return {"$connect": connect_handler, "$disconnect": disconnect_handler}.get(
        event["requestContext"]["routeKey"], message_handler)(event, context)


def send(event, connection_id, payload):
    client = management_client(event)
    try:
        client.post_to_connection(ConnectionId=connection_id, Data=json.dumps(payload).encode())
    except client.exceptions.GoneException:
        CONNECTIONS.pop(connection_id, None)  # stale: clean up, as the seeds do
    return {"statusCode": 200, "body": "OK"}


def broadcast(event, room_id, payload, skip=None):
    for connection_id in [cid for cid, c in CONNECTIONS.items() if c["roomId"] == room_id and cid != skip]:
        send(event, connection_id, payload)


def now():
    return int(time.time() * 1000)
