/// The OpenAPI 3.1 description of the management API, served at `/@openapi.json`; `tests/blackbox/test_openapi.py`
/// validates it and fuzzes the live server with it.
enum OpenAPIDocument {
    static let json = ##"""
        {
          "openapi": "3.1.0",
          "info": {
            "title": "Switchboard management API",
            "version": "1.0.0",
            "description": "API Gateway's `@connections` API (boto3 `apigatewaymanagementapi` works with `endpoint_url`), plus rooms, users, broadcast and listings. Every path also works under a `/{stage}` prefix. Authenticate with AWS Signature V4 (service `execute-api`, any region) or `Authorization: Bearer TOKEN`; without configured credentials only loopback clients are served."
          },
          "security": [
            {
              "bearer": []
            },
            {
              "sigv4": []
            }
          ],
          "paths": {
            "/@connections": {
              "get": {
                "operationId": "listConnections",
                "summary": "List connections, paged by id",
                "parameters": [
                  {
                    "$ref": "#/components/parameters/Limit"
                  },
                  {
                    "$ref": "#/components/parameters/Cursor"
                  }
                ],
                "responses": {
                  "200": {
                    "description": "One page",
                    "content": {
                      "application/json": {
                        "schema": {
                          "type": "object",
                          "required": [
                            "items",
                            "next"
                          ],
                          "properties": {
                            "items": {
                              "type": "array",
                              "items": {
                                "$ref": "#/components/schemas/ConnectionItem"
                              }
                            },
                            "next": {
                              "type": [
                                "string",
                                "null"
                              ]
                            }
                          }
                        }
                      }
                    }
                  },
                  "400": {
                    "$ref": "#/components/responses/BadRequest"
                  },
                  "403": {
                    "$ref": "#/components/responses/Forbidden"
                  }
                }
              }
            },
            "/@connections/{connectionId}": {
              "parameters": [
                {
                  "$ref": "#/components/parameters/ConnectionId"
                }
              ],
              "post": {
                "operationId": "postToConnection",
                "summary": "Send data to a connection (API Gateway PostToConnection)",
                "requestBody": {
                  "required": false,
                  "description": "The data, delivered as one message: a text frame when it is valid UTF-8, binary otherwise.",
                  "content": {
                    "application/json": {
                      "schema": {}
                    },
                    "text/plain": {
                      "schema": {
                        "type": "string"
                      }
                    },
                    "application/octet-stream": {
                      "schema": {
                        "type": "string",
                        "format": "binary"
                      }
                    }
                  }
                },
                "responses": {
                  "200": {
                    "description": "Delivered"
                  },
                  "400": {
                    "$ref": "#/components/responses/BadRequest"
                  },
                  "403": {
                    "$ref": "#/components/responses/Forbidden"
                  },
                  "410": {
                    "$ref": "#/components/responses/Gone"
                  },
                  "413": {
                    "$ref": "#/components/responses/PayloadTooLarge"
                  },
                  "429": {
                    "$ref": "#/components/responses/LimitExceeded"
                  }
                }
              },
              "get": {
                "operationId": "getConnection",
                "summary": "Describe a connection (API Gateway GetConnection)",
                "responses": {
                  "200": {
                    "description": "The connection",
                    "content": {
                      "application/json": {
                        "schema": {
                          "$ref": "#/components/schemas/Connection"
                        }
                      }
                    }
                  },
                  "400": {
                    "$ref": "#/components/responses/BadRequest"
                  },
                  "403": {
                    "$ref": "#/components/responses/Forbidden"
                  },
                  "410": {
                    "$ref": "#/components/responses/Gone"
                  }
                }
              },
              "delete": {
                "operationId": "deleteConnection",
                "summary": "Close a connection (API Gateway DeleteConnection); its $disconnect runs",
                "parameters": [
                  {
                    "name": "code",
                    "in": "query",
                    "schema": {
                      "type": "integer",
                      "default": 1000
                    },
                    "description": "Close code: 1000-1003, 1007-1014 or 3000-4999."
                  },
                  {
                    "name": "reason",
                    "in": "query",
                    "schema": {
                      "type": "string",
                      "maxLength": 123
                    },
                    "description": "Close reason, at most 123 bytes of UTF-8."
                  }
                ],
                "responses": {
                  "204": {
                    "description": "Closing"
                  },
                  "400": {
                    "$ref": "#/components/responses/BadRequest"
                  },
                  "403": {
                    "$ref": "#/components/responses/Forbidden"
                  },
                  "410": {
                    "$ref": "#/components/responses/Gone"
                  }
                }
              }
            },
            "/@connections/{connectionId}/rooms/{roomId}": {
              "parameters": [
                {
                  "$ref": "#/components/parameters/ConnectionId"
                },
                {
                  "$ref": "#/components/parameters/RoomId"
                }
              ],
              "put": {
                "operationId": "joinRoom",
                "summary": "Join the connection to a room, as if it sent joinRoom",
                "responses": {
                  "204": {
                    "description": "Joining"
                  },
                  "400": {
                    "$ref": "#/components/responses/BadRequest"
                  },
                  "403": {
                    "$ref": "#/components/responses/Forbidden"
                  },
                  "410": {
                    "$ref": "#/components/responses/Gone"
                  }
                }
              },
              "delete": {
                "operationId": "leaveRoom",
                "summary": "Make the connection leave a room, as if it sent leaveRoom",
                "responses": {
                  "204": {
                    "description": "Leaving"
                  },
                  "400": {
                    "$ref": "#/components/responses/BadRequest"
                  },
                  "403": {
                    "$ref": "#/components/responses/Forbidden"
                  },
                  "410": {
                    "$ref": "#/components/responses/Gone"
                  }
                }
              }
            },
            "/@rooms": {
              "get": {
                "operationId": "listRooms",
                "summary": "List rooms with member counts, paged by id",
                "parameters": [
                  {
                    "$ref": "#/components/parameters/Limit"
                  },
                  {
                    "$ref": "#/components/parameters/Cursor"
                  }
                ],
                "responses": {
                  "200": {
                    "description": "One page",
                    "content": {
                      "application/json": {
                        "schema": {
                          "type": "object",
                          "required": [
                            "items",
                            "next"
                          ],
                          "properties": {
                            "items": {
                              "type": "array",
                              "items": {
                                "$ref": "#/components/schemas/RoomItem"
                              }
                            },
                            "next": {
                              "type": [
                                "string",
                                "null"
                              ]
                            }
                          }
                        }
                      }
                    }
                  },
                  "400": {
                    "$ref": "#/components/responses/BadRequest"
                  },
                  "403": {
                    "$ref": "#/components/responses/Forbidden"
                  }
                }
              }
            },
            "/@rooms/{roomId}": {
              "post": {
                "operationId": "publishToRoom",
                "summary": "Send data to every member of a room",
                "parameters": [
                  {
                    "$ref": "#/components/parameters/RoomId"
                  },
                  {
                    "name": "format",
                    "in": "query",
                    "schema": {
                      "type": "string",
                      "enum": [
                        "raw",
                        "message"
                      ],
                      "default": "raw"
                    },
                    "description": "`raw` delivers the body as sent; `message` (rooms only) wraps a JSON body in the seed protocol's `message` frame."
                  },
                  {
                    "name": "sender",
                    "in": "query",
                    "schema": {
                      "type": "string",
                      "pattern": "^[A-Za-z0-9_.:@-]{1,128}$",
                      "default": "server"
                    },
                    "description": "The `sender` of a `format=message` frame."
                  }
                ],
                "requestBody": {
                  "required": false,
                  "description": "The data, delivered as one message: a text frame when it is valid UTF-8, binary otherwise.",
                  "content": {
                    "application/json": {
                      "schema": {}
                    },
                    "text/plain": {
                      "schema": {
                        "type": "string"
                      }
                    },
                    "application/octet-stream": {
                      "schema": {
                        "type": "string",
                        "format": "binary"
                      }
                    }
                  }
                },
                "responses": {
                  "200": {
                    "description": "Delivered; `delivered` counts the recipients on this node.",
                    "content": {
                      "application/json": {
                        "schema": {
                          "$ref": "#/components/schemas/Delivered"
                        }
                      }
                    }
                  },
                  "400": {
                    "$ref": "#/components/responses/BadRequest"
                  },
                  "403": {
                    "$ref": "#/components/responses/Forbidden"
                  },
                  "413": {
                    "$ref": "#/components/responses/PayloadTooLarge"
                  }
                }
              }
            },
            "/@rooms/{roomId}/members": {
              "get": {
                "operationId": "listRoomMembers",
                "summary": "List a room's members, paged by connection id",
                "parameters": [
                  {
                    "$ref": "#/components/parameters/RoomId"
                  },
                  {
                    "$ref": "#/components/parameters/Limit"
                  },
                  {
                    "$ref": "#/components/parameters/Cursor"
                  }
                ],
                "responses": {
                  "200": {
                    "description": "One page",
                    "content": {
                      "application/json": {
                        "schema": {
                          "type": "object",
                          "required": [
                            "items",
                            "next"
                          ],
                          "properties": {
                            "items": {
                              "type": "array",
                              "items": {
                                "$ref": "#/components/schemas/Member"
                              }
                            },
                            "next": {
                              "type": [
                                "string",
                                "null"
                              ]
                            }
                          }
                        }
                      }
                    }
                  },
                  "400": {
                    "$ref": "#/components/responses/BadRequest"
                  },
                  "403": {
                    "$ref": "#/components/responses/Forbidden"
                  }
                }
              }
            },
            "/@users/{userId}": {
              "post": {
                "operationId": "publishToUser",
                "summary": "Send data to every connection of a user",
                "parameters": [
                  {
                    "$ref": "#/components/parameters/UserId"
                  }
                ],
                "requestBody": {
                  "required": false,
                  "description": "The data, delivered as one message: a text frame when it is valid UTF-8, binary otherwise.",
                  "content": {
                    "application/json": {
                      "schema": {}
                    },
                    "text/plain": {
                      "schema": {
                        "type": "string"
                      }
                    },
                    "application/octet-stream": {
                      "schema": {
                        "type": "string",
                        "format": "binary"
                      }
                    }
                  }
                },
                "responses": {
                  "200": {
                    "description": "Delivered; `delivered` counts the recipients on this node.",
                    "content": {
                      "application/json": {
                        "schema": {
                          "$ref": "#/components/schemas/Delivered"
                        }
                      }
                    }
                  },
                  "400": {
                    "$ref": "#/components/responses/BadRequest"
                  },
                  "403": {
                    "$ref": "#/components/responses/Forbidden"
                  },
                  "413": {
                    "$ref": "#/components/responses/PayloadTooLarge"
                  }
                }
              }
            },
            "/@broadcast": {
              "post": {
                "operationId": "broadcast",
                "summary": "Send data to every connection",
                "requestBody": {
                  "required": false,
                  "description": "The data, delivered as one message: a text frame when it is valid UTF-8, binary otherwise.",
                  "content": {
                    "application/json": {
                      "schema": {}
                    },
                    "text/plain": {
                      "schema": {
                        "type": "string"
                      }
                    },
                    "application/octet-stream": {
                      "schema": {
                        "type": "string",
                        "format": "binary"
                      }
                    }
                  }
                },
                "responses": {
                  "200": {
                    "description": "Delivered; `delivered` counts the recipients on this node.",
                    "content": {
                      "application/json": {
                        "schema": {
                          "$ref": "#/components/schemas/Delivered"
                        }
                      }
                    }
                  },
                  "403": {
                    "$ref": "#/components/responses/Forbidden"
                  },
                  "413": {
                    "$ref": "#/components/responses/PayloadTooLarge"
                  }
                }
              }
            },
            "/@stats": {
              "get": {
                "operationId": "stats",
                "summary": "This node's counters",
                "responses": {
                  "200": {
                    "description": "Stats",
                    "content": {
                      "application/json": {
                        "schema": {
                          "$ref": "#/components/schemas/Stats"
                        }
                      }
                    }
                  },
                  "403": {
                    "$ref": "#/components/responses/Forbidden"
                  }
                }
              }
            },
            "/@openapi.json": {
              "get": {
                "operationId": "openapi",
                "summary": "This document",
                "security": [],
                "responses": {
                  "200": {
                    "description": "OpenAPI 3.1",
                    "content": {
                      "application/json": {
                        "schema": {
                          "type": "object"
                        }
                      }
                    }
                  }
                }
              }
            }
          },
          "components": {
            "securitySchemes": {
              "bearer": {
                "type": "http",
                "scheme": "bearer"
              },
              "sigv4": {
                "type": "apiKey",
                "in": "header",
                "name": "Authorization",
                "description": "AWS Signature Version 4, service execute-api, any region."
              }
            },
            "schemas": {
              "Error": {
                "type": "object",
                "required": [
                  "message"
                ],
                "properties": {
                  "message": {
                    "type": "string"
                  }
                }
              },
              "Connection": {
                "type": "object",
                "required": [
                  "connectedAt",
                  "identity",
                  "lastActiveAt"
                ],
                "properties": {
                  "connectedAt": {
                    "type": "string",
                    "format": "date-time"
                  },
                  "lastActiveAt": {
                    "type": "string",
                    "format": "date-time"
                  },
                  "identity": {
                    "type": "object",
                    "required": [
                      "sourceIp",
                      "userAgent"
                    ],
                    "properties": {
                      "sourceIp": {
                        "type": "string"
                      },
                      "userAgent": {
                        "type": "string"
                      }
                    }
                  }
                }
              },
              "ConnectionItem": {
                "type": "object",
                "required": [
                  "connectionId",
                  "userId",
                  "rooms",
                  "connectedAt",
                  "lastActiveAt",
                  "sourceIp",
                  "userAgent"
                ],
                "properties": {
                  "connectionId": {
                    "type": "string"
                  },
                  "userId": {
                    "type": "string"
                  },
                  "rooms": {
                    "type": "array",
                    "items": {
                      "type": "string"
                    }
                  },
                  "connectedAt": {
                    "type": "string",
                    "format": "date-time"
                  },
                  "lastActiveAt": {
                    "type": "string",
                    "format": "date-time"
                  },
                  "sourceIp": {
                    "type": "string"
                  },
                  "userAgent": {
                    "type": "string"
                  }
                }
              },
              "RoomItem": {
                "type": "object",
                "required": [
                  "roomId",
                  "members"
                ],
                "properties": {
                  "roomId": {
                    "type": "string"
                  },
                  "members": {
                    "type": "integer",
                    "minimum": 1
                  }
                }
              },
              "Member": {
                "type": "object",
                "required": [
                  "connectionId",
                  "userId"
                ],
                "properties": {
                  "connectionId": {
                    "type": "string"
                  },
                  "userId": {
                    "type": "string"
                  }
                }
              },
              "Delivered": {
                "type": "object",
                "required": [
                  "delivered"
                ],
                "properties": {
                  "delivered": {
                    "type": "integer",
                    "minimum": 0
                  }
                }
              },
              "Stats": {
                "type": "object",
                "required": [
                  "connections",
                  "connectionsAccepted",
                  "rooms",
                  "eventLoops",
                  "draining",
                  "uptimeSeconds"
                ],
                "properties": {
                  "connections": {
                    "type": "integer"
                  },
                  "connectionsAccepted": {
                    "type": "integer"
                  },
                  "rooms": {
                    "type": "integer"
                  },
                  "eventLoops": {
                    "type": "integer"
                  },
                  "draining": {
                    "type": "boolean"
                  },
                  "uptimeSeconds": {
                    "type": "integer"
                  }
                }
              }
            },
            "responses": {
              "BadRequest": {
                "description": "Malformed id, room, user or parameter (BadRequestException)",
                "headers": {
                  "x-amzn-ErrorType": {
                    "schema": {
                      "type": "string"
                    },
                    "description": "AWS error type, e.g. GoneException"
                  }
                },
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Error"
                    }
                  }
                }
              },
              "Forbidden": {
                "description": "Missing or invalid credentials (ForbiddenException)",
                "headers": {
                  "x-amzn-ErrorType": {
                    "schema": {
                      "type": "string"
                    },
                    "description": "AWS error type, e.g. GoneException"
                  }
                },
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Error"
                    }
                  }
                }
              },
              "Gone": {
                "description": "The connection is gone (GoneException)",
                "headers": {
                  "x-amzn-ErrorType": {
                    "schema": {
                      "type": "string"
                    },
                    "description": "AWS error type, e.g. GoneException"
                  }
                },
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Error"
                    }
                  }
                }
              },
              "PayloadTooLarge": {
                "description": "The body is over the message limit (PayloadTooLargeException)",
                "headers": {
                  "x-amzn-ErrorType": {
                    "schema": {
                      "type": "string"
                    },
                    "description": "AWS error type, e.g. GoneException"
                  }
                },
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Error"
                    }
                  }
                }
              },
              "LimitExceeded": {
                "description": "The client's outbound buffer is full (LimitExceededException)",
                "headers": {
                  "x-amzn-ErrorType": {
                    "schema": {
                      "type": "string"
                    },
                    "description": "AWS error type, e.g. GoneException"
                  }
                },
                "content": {
                  "application/json": {
                    "schema": {
                      "$ref": "#/components/schemas/Error"
                    }
                  }
                }
              }
            },
            "parameters": {
              "Limit": {
                "name": "limit",
                "in": "query",
                "schema": {
                  "type": "integer",
                  "minimum": 1,
                  "maximum": 1000,
                  "default": 100
                }
              },
              "Cursor": {
                "name": "cursor",
                "in": "query",
                "schema": {
                  "type": "string"
                },
                "description": "The `next` value of the previous page."
              },
              "ConnectionId": {
                "name": "connectionId",
                "in": "path",
                "required": true,
                "schema": {
                  "type": "string",
                  "minLength": 1,
                  "maxLength": 128,
                  "pattern": "^[A-Za-z0-9_=+/-]+$"
                },
                "description": "Percent-encoded connection id (`=` as `%3D`)."
              },
              "RoomId": {
                "name": "roomId",
                "in": "path",
                "required": true,
                "schema": {
                  "type": "string",
                  "minLength": 1,
                  "maxLength": 128,
                  "pattern": "^[A-Za-z0-9_.:@-]+$"
                }
              },
              "UserId": {
                "name": "userId",
                "in": "path",
                "required": true,
                "schema": {
                  "type": "string",
                  "minLength": 1,
                  "maxLength": 128,
                  "pattern": "^[A-Za-z0-9_.:@-]+$"
                }
              }
            }
          }
        }
        """##
}
