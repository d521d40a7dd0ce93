package pipeline

import (
	"errors"
	"fmt"

	"github.com/IBM/sarama"
)

// errSessionOver means the coordinator refused a commit because the
// session's generation or member is gone: the group has moved on, and the
// offsets are for the next owner to commit.
var errSessionOver = errors.New("consumer group session is over")

// errRebalancing means the coordinator refused a commit because a
// cooperative rebalance is under way or has just made a newer generation
// than the one the commit carried: the session goes on, and the commit is
// retried with the session's generation once the member has rejoined.
var errRebalancing = errors.New("the group is rebalancing")

// commitOffsets commits offsets for a generation and member of the
// group and returns those the coordinator took. Sarama's own Commit reports
// nothing back to its caller; the worker needs to know, because it frees a
// message's in-flight slot only once its offset is committed, and retries
// what was not.
func (w *Worker) commitOffsets(gen int32, member string, offs map[partKey]int64) (map[partKey]int64, error) {
	req := sarama.NewOffsetCommitRequest(w.ccfg, w.cfg.Group)
	req.ConsumerGroupGeneration = gen
	req.ConsumerID = member
	for k, off := range offs {
		req.AddBlockWithLeaderEpoch(k.topic, k.partition, off, -1, 0, "")
	}
	coord, err := w.client.Coordinator(w.cfg.Group)
	if err != nil {
		return nil, fmt.Errorf("finding the coordinator of group %q: %w", w.cfg.Group, err)
	}
	resp, err := coord.CommitOffset(req)
	if err != nil {
		// The connection is in an unknown state; the next attempt opens a
		// new one, to whichever broker coordinates the group by then.
		_ = coord.Close()
		_ = w.client.RefreshCoordinator(w.cfg.Group)
		return nil, fmt.Errorf("committing offsets of group %q: %w", w.cfg.Group, err)
	}
	done := make(map[partKey]int64, len(offs))
	var errs []error
	for k, off := range offs {
		kerr, ok := resp.Errors[k.topic][k.partition]
		if !ok {
			errs = append(errs, fmt.Errorf("%s/%d: no answer from the coordinator", k.topic, k.partition))
			continue
		}
		switch kerr {
		case sarama.ErrNoError:
			done[k] = off
			continue
		case sarama.ErrIllegalGeneration, sarama.ErrRebalanceInProgress:
			if w.cfg.cooperative() {
				// A cooperative session outlives generations: only the
				// member's own end (UNKNOWN_MEMBER_ID) ends it.
				errs = append(errs, fmt.Errorf("%s/%d: %w: %w", k.topic, k.partition, errRebalancing, kerr))
				continue
			}
			errs = append(errs, fmt.Errorf("%s/%d: %w: %w", k.topic, k.partition, errSessionOver, kerr))
			continue
		case sarama.ErrUnknownMemberId, sarama.ErrFencedInstancedId:
			errs = append(errs, fmt.Errorf("%s/%d: %w: %w", k.topic, k.partition, errSessionOver, kerr))
			continue
		case sarama.ErrNotCoordinatorForConsumer, sarama.ErrConsumerCoordinatorNotAvailable:
			_ = w.client.RefreshCoordinator(w.cfg.Group)
		}
		errs = append(errs, fmt.Errorf("%s/%d: %w", k.topic, k.partition, kerr))
	}
	if len(errs) > 0 {
		return done, fmt.Errorf("committing offsets of group %q: %w", w.cfg.Group, errors.Join(errs...))
	}
	return done, nil
}
