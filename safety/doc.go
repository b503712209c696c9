// Package safety checks the lock library against real redis-server
// processes under faults: a harness records the history of every obtain,
// refresh and release from several clients, and two checkers judge it.
//
//   - Linearizable checks the history against a TTL-aware mutex model with
//     porcupine, one partition a key: a lock may pass to another token only
//     once its holder's TTL has passed, a release or refresh succeeds only
//     for the holder, and (optionally) a fresh obtain's fence token is above
//     every fence token handed out before it. Operations whose outcome is
//     unknown (a transport error, a ctx that ended in flight) may have taken
//     effect at any time after their call, or never; the library's cleanup
//     of an obtain with an unknown outcome is modelled as such a release.
//   - FencedResource is the resource a lock protects: it accepts a write
//     only with a fence token strictly greater than the last one it
//     accepted. A write that it rejects although its writer's lock was still
//     known to be valid is a violation: two holders at once, or a fence
//     counter that went back.
//
// Overlaps counts the plainest violation: two tokens that each surely held
// the same key at the same instant. The negative controls in the tests (a
// release by raw DEL, a Redis that loses its data) prove that each checker
// does flag a broken lock.
//
// The module is its own, so that toxiproxy, porcupine and goleak never enter
// the library's go.mod.
package safety
