import { describe, expect, it } from 'vitest'
import { decideRefresh, emptyDecision, eventConversationIds, isEmptyDecision, mergeDecisions } from '../src/lib/events'

const ev = (name: string, conversation_id?: string) => ({ name, data: conversation_id ? { conversation_id } : {} })

describe('decideRefresh', () => {
  it('refreshes the list on events that change list rows', () => {
    for (const name of ['conversation.created', 'conversation.closed', 'message.accepted', 'reply.created']) {
      expect(decideRefresh(ev(name, 'c1'), null).list, name).toBe(true)
    }
    expect(decideRefresh(ev('message.held', 'c1'), null).list).toBe(false)
    expect(decideRefresh(ev('message.expired', 'c1'), null).list).toBe(false)
  })

  it('refreshes the open conversation only for its own events', () => {
    expect(decideRefresh(ev('message.accepted', 'c1'), 'c1')).toMatchObject({ conversation: true, activity: true })
    expect(decideRefresh(ev('message.accepted', 'c2'), 'c1')).toMatchObject({ conversation: false, activity: false })
    expect(decideRefresh(ev('reply.created', 'c1'), 'c1')).toMatchObject({ conversation: true, activity: true })
    expect(decideRefresh(ev('conversation.created', 'c1'), 'c1').conversation).toBe(true)
  })

  it('held/expired only touch activity and the held overview', () => {
    expect(decideRefresh(ev('message.held', 'c1'), 'c1')).toEqual({
      list: false,
      conversation: false,
      activity: true,
      held: true,
    })
    expect(decideRefresh(ev('message.expired', 'c9'), 'c1')).toEqual({
      list: false,
      conversation: false,
      activity: false,
      held: true,
    })
  })

  it('reloads everything after a reconnection and nothing for unknown events', () => {
    expect(decideRefresh(ev('stream.reconnected'), 'c1')).toEqual({
      list: true,
      conversation: true,
      activity: true,
      held: true,
    })
    expect(decideRefresh(ev('stream.reconnected'), null).conversation).toBe(false)
    expect(isEmptyDecision(decideRefresh(ev('something.else', 'c1'), 'c1'))).toBe(true)
  })

  it('reloads everything once an API token is given', () => {
    expect(decideRefresh(ev('auth.changed'), 'c1')).toEqual(decideRefresh(ev('stream.reconnected'), 'c1'))
    expect(decideRefresh(ev('auth.changed'), null)).toEqual({ list: true, conversation: false, activity: false, held: true })
  })

  it('treats local simulator posts like a change to that conversation', () => {
    expect(decideRefresh(ev('local.webhook', 'c1'), 'c1')).toMatchObject({ list: true, conversation: true })
  })

  it('extracts ids and merges decisions', () => {
    expect(eventConversationIds(ev('x', 'c1'))).toEqual(['c1'])
    expect(eventConversationIds({ name: 'x', data: { conversation_id: 5 as unknown as string } })).toEqual([])
    const merged = mergeDecisions(emptyDecision(), { list: true, conversation: false, activity: true, held: false })
    expect(merged).toEqual({ list: true, conversation: false, activity: true, held: false })
  })
})
