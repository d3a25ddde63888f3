// Package shared lets replicas of one SaaS product report one merged
// BatchMeterUsage record per (customer, dimension, hour), with an S3
// prefix (or a shared directory) as the only shared state
// (metering.state_url). AWS keeps the first record per key from any
// sender and answers DuplicateRecord to the others, so replicas must
// never report their own partial sums.
//
// # Objects
//
// Under the state prefix, all JSON:
//
//	partials/<product>/<YYYY-MM-DDTHH>/<agent>.json   once per agent and hour (If-None-Match: *)
//	agents/<agent>.json                                heartbeat, replaced every Tick
//	claims/<product>/<YYYY-MM-DDTHH>.json              once per hour (If-None-Match: *)
//	claims/<product>/<YYYY-MM-DDTHH>.result.json       once per hour (If-None-Match: *)
//	claims/<product>/<YYYY-MM-DDTHH>.expired.json      records unanswered past the window
//
// and, per agent, Config.Dir/shared.json, the journal, replaced whole
// (temp, fsync, rename, fsync dir).
//
// # Protocol
//
//  1. Hand-over. The ledger (package metering, Options.Shared) turns a
//     closed hour of a key into an intent of op "shared" holding its exact
//     usage, written to the ledger before Hand is called and re-handed
//     unchanged until Hand returns nil. Hand records the usage in the
//     journal, and the IDs of this hand-over: the ledger makes the next
//     one only after it has durably marked this one's intents handed, so
//     only the last can come again (a crash between Hand and that write),
//     and its repeat is ignored. Usage
//     goes to its own hour, or, if this agent's partial of that hour is
//     written already, to the first hour it has not written (NextHour).
//  2. Partials. For every hour below the ledger's closure cut, the agent
//     writes its partial with If-None-Match: *, empty ones too (unless the
//     hour is claimed already), then records it in the journal. A crash
//     between the two makes the next Create fail with 412: the agent reads
//     the partial that stands, and the usage the journal has beyond it
//     (handed meanwhile) goes to a later hour. So each handed usage is in
//     exactly one partial.
//  3. Claims. Hour H is claimed when now >= H+1h+lateness and no live
//     agent (heartbeat under 3 Ticks old) may still write H, or when
//     merge_grace has passed for those that may (from the later of H's
//     close and their start). The claim names each merged partial by
//     agent and SHA-256 and fixes every record: per series, quantity =
//     floor(carry + merged nanos), capped at 2147483647, the rest carried.
//     The carry comes from the claim of H-1: claims are made in hour order
//     and each needs its predecessor (the first one of a product has no
//     carry), so a carry is used once. Only If-None-Match: * decides who
//     claims: a loser reads the winner's claim.
//  4. Sending. The claim's records are sent as they are, 25 per call, and
//     the answers written once to the result. Any agent may send a claim
//     that has no result: the request is identical, and AWS answers an
//     identical record with Success and the original MeteringRecordId. The
//     claimer sends at once, the others after one Stagger per rank, so a
//     dead claimer is replaced without a lease.
//  5. Settling. An agent's written partial is merged when its hour's claim
//     names it (same SHA-256); otherwise (written after the claim, or its
//     hour will never be claimed because a later one is) its usage is
//     added to the agent's first unwritten hour and the partial marked
//     carried, in one journal write. A partial is settled once: the
//     journal marks it before the usage can be written again.
//
// # Guarantees and their limits
//
// Each unit of usage is in exactly one claim's records or carry: a handed
// usage is in one partial (2), a partial is merged by one claim or carried
// into a later partial by its agent (5), a claim is created once and never
// changed (3), and sending the same claim again is idempotent at AWS (4).
// Killing any agent at any point loses nothing and doubles nothing.
//
// A claim still unanswered when its hour leaves the window (AWS
// unreachable for hours) is recorded Expired, and the next claim made adds
// its records to its carry, named in Claim.Absorbed along the chain so
// they are taken once. As with the single-agent ledger, this is the one
// place a repeat is possible: a call AWS accepted whose answer was lost,
// followed by hours without reaching AWS, is billed again later.
//
// Known limits, each logged: two agents making
// a product's very first claims for different hours at the same moment
// can each bill one fraction (< 1 unit per series); usage of hours older
// than the lookback (window + 1 day) handed by an agent that was down
// that long is carried into its next hour.
package shared
