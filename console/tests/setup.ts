import { enableAutoUnmount } from '@vue/test-utils'
import { afterEach } from 'vitest'

// Composables share module state (the clock's interval); a component left mounted by one test
// would keep its subscription, bound to that test's fake timers, into the next.
enableAutoUnmount(afterEach)
