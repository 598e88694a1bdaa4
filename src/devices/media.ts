import { OutboundRequestError, type GuardedHttpClient, type OutboundFailure } from '../shared/guarded-http.js';
import { redactUserUrl } from '../shared/redact.js';
import { MediaDownloadError } from './errors.js';

// Media reaches WhatsApp as bytes wafleet downloaded itself, through the guarded client, whichever
// driver sends it: Baileys, handed the URL, would fetch it with no address rule, no timeout and
// no size cap.

/** Downloads a message's media; throws MediaDownloadError. */
export type MediaDownloader = (url: string) => Promise<Buffer>;

/** Refused again on every attempt: the message fails at once. A timeout or a network error may pass. */
const PERMANENT: ReadonlySet<OutboundFailure> = new Set(['bad_url', 'blocked_address', 'too_large', 'too_many_redirects']);

export function createMediaDownloader(http: GuardedHttpClient): MediaDownloader {
  return async (url) => {
    let response;
    try {
      response = await http.request(url);
    } catch (err) {
      if (err instanceof OutboundRequestError) throw new MediaDownloadError(PERMANENT.has(err.code), `media not downloaded: ${err.message}`, { cause: err });
      throw err;
    }
    const { status } = response;
    if (status >= 200 && status < 300) return response.body;
    // A server in trouble (5xx), a slow one (408) or a busy one (429) may answer later; any other
    // status says the link is wrong or gone.
    const permanent = status < 500 && status !== 408 && status !== 429;
    throw new MediaDownloadError(permanent, `media not downloaded: GET ${redactUserUrl(url)} answered ${status}`);
  };
}
