// An idiomatic gorilla/websocket server speaking the seed rooms protocol (DESIGN §3): what teams write by hand.
// One reader goroutine and one writer goroutine per connection, rooms in a map behind a mutex.
package main

import (
	"encoding/json"
	"flag"
	"log"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

type client struct {
	userID string
	send   chan []byte
	rooms  map[string]bool
}

type hub struct {
	mu    sync.RWMutex
	rooms map[string]map[*client]bool
}

var upgrader = websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 1024, CheckOrigin: func(*http.Request) bool { return true }}

func now() int64 { return time.Now().UnixMilli() }

func (h *hub) broadcast(room string, payload []byte, except *client) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for c := range h.rooms[room] {
		if c == except {
			continue
		}
		select {
		case c.send <- payload:
		default: // slow consumer: drop, as typical servers do
		}
	}
}

func encode(v any) []byte { b, _ := json.Marshal(v); return b }

func (h *hub) serve(w http.ResponseWriter, r *http.Request) {
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	user := r.URL.Query().Get("userId")
	if user == "" {
		user = "anonymous"
	}
	c := &client{userID: user, send: make(chan []byte, 256), rooms: map[string]bool{}}
	go func() {
		for payload := range c.send {
			if conn.WriteMessage(websocket.TextMessage, payload) != nil {
				break
			}
		}
		conn.Close()
	}()
	defer func() {
		h.mu.Lock()
		for room := range c.rooms {
			delete(h.rooms[room], c)
		}
		h.mu.Unlock()
		for room := range c.rooms {
			h.broadcast(room, encode(map[string]any{"action": "userLeft", "roomId": room, "userId": c.userID, "timestamp": now()}), nil)
		}
		close(c.send)
	}()
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			return
		}
		var msg map[string]any
		if json.Unmarshal(data, &msg) != nil {
			c.send <- encode(map[string]any{"action": "error", "message": "Invalid JSON", "timestamp": now()})
			continue
		}
		room, _ := msg["roomId"].(string)
		switch msg["action"] {
		case "ping":
			c.send <- encode(map[string]any{"action": "pong", "timestamp": now()})
		case "joinRoom":
			h.mu.Lock()
			if h.rooms[room] == nil {
				h.rooms[room] = map[*client]bool{}
			}
			h.rooms[room][c] = true
			members := []string{}
			for m := range h.rooms[room] {
				members = append(members, m.userID)
			}
			h.mu.Unlock()
			c.rooms[room] = true
			c.send <- encode(map[string]any{"action": "joinedRoom", "roomId": room, "members": members})
			h.broadcast(room, encode(map[string]any{"action": "userJoined", "roomId": room, "userId": c.userID, "timestamp": now()}), c)
		case "leaveRoom":
			h.mu.Lock()
			delete(h.rooms[room], c)
			h.mu.Unlock()
			delete(c.rooms, room)
			h.broadcast(room, encode(map[string]any{"action": "userLeft", "roomId": room, "userId": c.userID, "timestamp": now()}), nil)
		case "sendMessage":
			if !c.rooms[room] {
				c.send <- encode(map[string]any{"action": "error", "message": "Not in room", "timestamp": now()})
				continue
			}
			h.broadcast(room, encode(map[string]any{"action": "message", "roomId": room, "message": msg["message"], "sender": c.userID, "timestamp": now()}), nil)
		default:
			c.send <- encode(map[string]any{"action": "error", "message": "Unknown action", "timestamp": now()})
		}
	}
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8081", "listen address")
	flag.Parse()
	h := &hub{rooms: map[string]map[*client]bool{}}
	http.HandleFunc("/", h.serve)
	log.Fatal(http.ListenAndServe(*addr, nil))
}
