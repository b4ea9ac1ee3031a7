// An idiomatic gorilla/websocket server speaking the seed rooms protocol (DESIGN §3): what teams write by hand.
// One reader goroutine and one writer goroutine per connection, rooms in a map behind a mutex.
//
// Optional multi-node mode, `-redis host:port`: sendMessage PUBLISHes the encoded frame to Redis channel room:<roomId>
// (pooled connections) and one subscriber connection per process PSUBSCRIBEs room:* and delivers each payload to the
// local members of that room, so instances behind no load balancer fan out to each other's members. Presence stays
// node-local: joinedRoom's member list and userJoined/userLeft only cover this node.
//
// Optional permessage-deflate, `-deflate`: the upgrader accepts compression (gorilla supports no context takeover
// only, at its default level 1) and every write goes out as a websocket.PreparedMessage, so a room's broadcast is
// compressed once and the same frame is written to every member.
package main

import (
	"encoding/json"
	"flag"
	"log"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/gorilla/websocket"
)

type client struct {
	userID   string
	send     chan []byte                     // plain mode
	prepared chan *websocket.PreparedMessage // -deflate
	rooms    map[string]bool
}

// reply queues a frame for this client alone (blocking, as before the flag existed).
func (c *client) reply(payload []byte) {
	if c.prepared != nil {
		c.prepared <- prepare(payload)
		return
	}
	c.send <- payload
}

func prepare(payload []byte) *websocket.PreparedMessage {
	pm, err := websocket.NewPreparedMessage(websocket.TextMessage, payload)
	if err != nil {
		log.Fatalf("prepare: %v", err)
	}
	return pm
}

type hub struct {
	mu    sync.RWMutex
	rooms map[string]map[*client]bool
	redis *redis.Pool // nil: single node
}

var upgrader = websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 1024, CheckOrigin: func(*http.Request) bool { return true }}

var compress bool // -deflate

func now() int64 { return time.Now().UnixMilli() }

func (h *hub) broadcast(room string, payload []byte, except *client) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if compress {
		pm := prepare(payload) // compressed once, on the first member's write, for every member
		for c := range h.rooms[room] {
			if c == except {
				continue
			}
			select {
			case c.prepared <- pm:
			default: // slow consumer: drop, as typical servers do
			}
		}
		return
	}
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

// publish delivers a room message to its members on every node: directly when single node, via Redis otherwise.
func (h *hub) publish(room string, payload []byte) {
	if h.redis == nil {
		h.broadcast(room, payload, nil)
		return
	}
	conn := h.redis.Get()
	defer conn.Close()
	if _, err := conn.Do("PUBLISH", "room:"+room, payload); err != nil {
		log.Printf("redis publish: %v", err)
	}
}

// subscribe relays every room:* message from Redis to the local members; the subscription is live when it returns.
func (h *hub) subscribe(addr string) {
	conn, err := redis.Dial("tcp", addr)
	if err != nil {
		log.Fatalf("redis subscribe: %v", err)
	}
	psc := redis.PubSubConn{Conn: conn}
	if err := psc.PSubscribe("room:*"); err != nil {
		log.Fatalf("redis subscribe: %v", err)
	}
	if _, ok := psc.Receive().(redis.Subscription); !ok {
		log.Fatal("redis subscribe: no confirmation")
	}
	go func() {
		for {
			switch m := psc.Receive().(type) {
			case redis.Message:
				h.broadcast(strings.TrimPrefix(m.Channel, "room:"), m.Data, nil)
			case error: // no resubscribe: losing cluster messages silently would skew a benchmark
				log.Fatalf("redis subscribe: %v", m)
			}
		}
	}()
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
	c := &client{userID: user, rooms: map[string]bool{}}
	if compress {
		c.prepared = make(chan *websocket.PreparedMessage, 256)
		go func() {
			for pm := range c.prepared {
				if conn.WritePreparedMessage(pm) != nil {
					break
				}
			}
			conn.Close()
		}()
	} else {
		c.send = make(chan []byte, 256)
		go func() {
			for payload := range c.send {
				if conn.WriteMessage(websocket.TextMessage, payload) != nil {
					break
				}
			}
			conn.Close()
		}()
	}
	defer func() {
		h.mu.Lock()
		for room := range c.rooms {
			delete(h.rooms[room], c)
		}
		h.mu.Unlock()
		for room := range c.rooms {
			h.broadcast(room, encode(map[string]any{"action": "userLeft", "roomId": room, "userId": c.userID, "timestamp": now()}), nil)
		}
		if compress {
			close(c.prepared)
		} else {
			close(c.send)
		}
	}()
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			return
		}
		var msg map[string]any
		if json.Unmarshal(data, &msg) != nil {
			c.reply(encode(map[string]any{"action": "error", "message": "Invalid JSON", "timestamp": now()}))
			continue
		}
		room, _ := msg["roomId"].(string)
		switch msg["action"] {
		case "ping":
			c.reply(encode(map[string]any{"action": "pong", "timestamp": now()}))
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
			c.reply(encode(map[string]any{"action": "joinedRoom", "roomId": room, "members": members}))
			h.broadcast(room, encode(map[string]any{"action": "userJoined", "roomId": room, "userId": c.userID, "timestamp": now()}), c)
		case "leaveRoom":
			h.mu.Lock()
			delete(h.rooms[room], c)
			h.mu.Unlock()
			delete(c.rooms, room)
			h.broadcast(room, encode(map[string]any{"action": "userLeft", "roomId": room, "userId": c.userID, "timestamp": now()}), nil)
		case "sendMessage":
			if !c.rooms[room] {
				c.reply(encode(map[string]any{"action": "error", "message": "Not in room", "timestamp": now()}))
				continue
			}
			h.publish(room, encode(map[string]any{"action": "message", "roomId": room, "message": msg["message"], "sender": c.userID, "timestamp": now()}))
		default:
			c.reply(encode(map[string]any{"action": "error", "message": "Unknown action", "timestamp": now()}))
		}
	}
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8081", "listen address")
	redisAddr := flag.String("redis", "", "Redis host:port for multi-node mode (empty: single node)")
	flag.BoolVar(&compress, "deflate", false, "accept permessage-deflate; writes go out as prepared messages")
	flag.Parse()
	upgrader.EnableCompression = compress
	h := &hub{rooms: map[string]map[*client]bool{}}
	if *redisAddr != "" {
		h.redis = &redis.Pool{MaxIdle: 64, IdleTimeout: time.Minute, Dial: func() (redis.Conn, error) { return redis.Dial("tcp", *redisAddr) }}
		h.subscribe(*redisAddr)
	}
	http.HandleFunc("/", h.serve)
	log.Fatal(http.ListenAndServe(*addr, nil))
}
