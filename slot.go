package redislock

import "strings"

// hashSlot returns the Redis Cluster hash slot of key: CRC16 (XMODEM) of the
// key, or of its hash tag (the part between the first "{" and the next "}",
// when that is not empty), modulo 16384.
func hashSlot(key string) uint16 {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for k := 0; k < len(key); k++ {
		crc ^= uint16(key[k]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc & 16383
}

// clusterQueue returns the wait queue of key on a cluster, as queue.lua
// names it: key and ":redislock-waiters" when key has a hash tag, else key
// made a hash tag and the suffix. A key that has a "}" and no hash tag has
// no queue: it stands for its own, so that a script's KEYS keep their count.
func clusterQueue(key string) string {
	const suffix = ":redislock-waiters"
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			return key + suffix
		}
	}
	if strings.IndexByte(key, '}') >= 0 {
		return key
	}
	return "{" + key + "}" + suffix
}

// scriptKeys returns the KEYS of a kind's scripts: the lock keys, the fence
// counter when there is one and, on a cluster, the wait queue of each lock
// key. A script declares every key it touches: while a slot migrates, the
// server then redirects or retries the script as a whole (ASK, TRYAGAIN),
// instead of letting it write a key that the other node holds.
func (c *Client) scriptKeys(keys []string, fence string) []string {
	if !c.cluster && fence == "" {
		return keys
	}
	out := make([]string, 0, 2*len(keys)+1)
	out = append(out, keys...)
	if fence != "" {
		out = append(out, fence)
	}
	if c.cluster {
		for _, k := range keys {
			out = append(out, clusterQueue(k))
		}
	}
	return out
}
